"""Running a revision's lifecycle hooks inside the deploy's states (docs/hooks.md).

Where each runs (engine/deploy/steps.py calls `run`): `before-stop` at the start of
`stopping`, `after-start` at the end of `starting`, `validate` in `healthy` before the
load balancer's health check; a rollback that restarted the previous revision's units
runs that revision's `after-start` and `validate`. Only the revision being started (the
target, or in a rollback the previous one) has its hooks run; an unassignment runs none.

No new machine states: a hook's failure is its state's failure, so the machine's rules
already say what follows (a failed `validate` in `healthy` rolls back with the units
restored and the instance re-registered; a failed hook in the rollback fails the
rollback), and a crash mid-hook resumes the state, which runs the hook again: hooks must
be idempotent. The runtime stops a run left by a crashed agent before it starts anew.

Each run is a span `hook.<name>` (result, exit status, duration, timeout: never output or
environment) and a `HookOutcome` in the history of the state that ran it. The outcome is
collected here and taken by the runner when it closes the state, whether the state
succeeded or failed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from flotilla.engine.checkpoint import HookOutcome
from flotilla.engine.deploy.errors import StepFailed
from flotilla.engine.deploy.telemetry import call_span, mark_error
from flotilla.engine.hooks import hook_command
from flotilla.engine.ports import HookResult, UnitRuntime
from flotilla.engine.records import Revision

T = TypeVar("T")


class LifecycleHooks:
    """Runs hooks for one deploy's steps, and keeps what they did for the state's history."""

    def __init__(
        self,
        runtime: UnitRuntime,
        *,
        environments: Callable[[Revision], Mapping[str, Mapping[str, str]]],
        call: Callable[[str, Callable[[], HookResult]], HookResult],
        keep_lease: Callable[[], None],
    ) -> None:
        self._runtime = runtime
        self._environments = environments
        self._call = call
        self._keep_lease = keep_lease
        self._outcomes: list[HookOutcome] = []

    def run(self, revision: Revision, hook: str) -> None:
        """Run `revision`'s `hook`, if it has one; `StepFailed` if the hook failed."""
        if hook not in revision.hooks:
            return
        command = hook_command(revision, hook, self._environments(revision))
        attributes: dict[str, str | int | bool | float] = {
            "flotilla.hook": hook,
            "flotilla.hook.revision": revision.id,
            "flotilla.hook.timeout_seconds": command.timeout_seconds,
        }
        with call_span(f"hook.{hook}", attributes) as span:
            # Retried through the runtime's transient errors: running a hook again is
            # what a resumed deploy does anyway.
            result = self._call(
                "runtime.run_hook",
                lambda: self._runtime.run_hook(command, between=self._keep_lease),
            )
            outcome = HookOutcome(
                hook=hook,
                revision=revision.id,
                timeout_seconds=command.timeout_seconds,
                result=result.result,
                exit_status=result.exit_status,
                duration_seconds=round(result.duration_seconds, 3),
            )
            span.set_attribute("flotilla.hook.result", outcome.result)
            span.set_attribute("flotilla.hook.duration_seconds", outcome.duration_seconds)
            if outcome.exit_status is not None:
                span.set_attribute("flotilla.hook.exit_status", outcome.exit_status)
            self._outcomes.append(outcome)
            if not outcome.succeeded:
                message = failure_message(outcome, command.unit)
                mark_error(span, message)
                raise StepFailed(message)

    def take(self) -> tuple[HookOutcome, ...]:
        """The outcomes of the hooks run since the last call (the state being closed)."""
        taken, self._outcomes = tuple(self._outcomes), []
        return taken


def failure_message(outcome: HookOutcome, unit: str) -> str:
    """Why a hook failed, in one line, with where to read its output (never the output)."""
    if outcome.result == "timeout":
        how = f"was stopped at its timeout of {outcome.timeout_seconds} s"
    elif outcome.exit_status is not None:
        how = f"exited with status {outcome.exit_status} after {outcome.duration_seconds:g} s"
    else:
        how = f"ended with result {outcome.result} after {outcome.duration_seconds:g} s"
    return (
        f"hook {outcome.hook} of revision {outcome.revision[:12]} {how}; its output is in "
        f"the instance's journal: journalctl -u {unit}"
    )
