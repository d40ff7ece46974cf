"""Which digest each container unit of a deploy runs (docs/containers.md): pulled in
`locking` for the units the deploy starts, carried over for the units already running
from what this instance's earlier deploys recorded. Pure apart from the `pull` given."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from flotilla.engine.checkpoint import DeployCheckpoint, Outcome, UnitPlan
from flotilla.engine.container_images import image_of
from flotilla.engine.deploy.errors import StepFailed
from flotilla.engine.errors import ImagePullError


def left_running(deploys: Iterable[DeployCheckpoint], revision_id: str) -> dict[str, str]:
    """Unit → digest reference of the revision's container units as the instance's deploys
    left them: said by the newest finished deploy that ended on that revision with a plan
    and pins (its units after, if it succeeded to it; before, if it rolled back to it)."""
    pins: dict[str, str] = {}
    for deploy in sorted(deploys, key=lambda d: d.created_at):
        if deploy.images is None or deploy.units is None:
            continue
        if deploy.outcome is Outcome.SUCCEEDED and deploy.to_revision == revision_id:
            names = deploy.units.after
        elif deploy.outcome is Outcome.ROLLED_BACK and deploy.from_revision == revision_id:
            names = deploy.units.before
        else:
            continue
        images = deploy.images
        pins = {unit: images[name] for unit, name in names.items() if name in images}
    return pins


def pins_for_deploy(
    plan: UnitPlan,
    target_units: Mapping[str, str] | None,
    running: Mapping[str, str],
    pull: Callable[[str], str],
) -> dict[str, str]:
    """Installed name → digest reference, for every container unit of the deploy: those
    running before keep theirs (`running`: unit → digest, from `left_running`), those the
    deploy starts are pulled now. A kept unit is not pulled: it runs what it was started
    with. A pull that fails fails the step, naming the unit and docker's reason."""
    pins = {plan.before[unit]: ref for unit, ref in running.items() if unit in plan.before}
    kept = set(plan.before.values())
    for unit, text in sorted((target_units or {}).items()):
        image, name = image_of(text), plan.after[unit]
        if image is None or name in kept:
            continue
        try:
            pins[name] = pull(image)
        except ImagePullError as failed:
            raise StepFailed(f"{unit}: {failed.message}") from failed
    return pins
