"""The deploy machine drawn as a Mermaid `stateDiagram-v2`, for docs/deploy-machine.md
(scripts/render-machine-diagram writes it there; a test checks it is current)."""

from __future__ import annotations

from flotilla.machines import deploy

# The guard of `skipped`: the deploy's own facts (machines/deploy.py `skip_reason`).
SKIP_LABEL = " [unassigned or unchanged]"


def mermaid() -> str:
    """The machine as a Mermaid `stateDiagram-v2` (rendered in docs/deploy-machine.md)."""
    guard_labels = {
        deploy.WITH_LB: " [with LB]",
        deploy.WITHOUT_LB: " [no LB]",
        deploy.SKIPS: SKIP_LABEL,
    }
    lines = ["stateDiagram-v2", f"    [*] --> {deploy.INITIAL_STATE}"]
    for transition in deploy.TRANSITIONS:
        label = transition["trigger"] + guard_labels.get(transition.get("conditions", ""), "")
        lines += [f"    {s} --> {transition['dest']}: {label}" for s in deploy.sources(transition)]
    lines += [f"    {state} --> [*]" for state in deploy.TERMINAL_STATES]
    return "\n".join(lines) + "\n"
