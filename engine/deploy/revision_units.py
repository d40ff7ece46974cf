"""A deploy's revisions and their units on this instance, for the steps (and the runner's
restore after a reboot): each revision fetched once and checked against its id before
anything of it is used, its environments opened once per run (held here only, never
stored), its units installed (container units pinned), started and checked running well
through the settle period, and the instance's other units stopped and removed."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from flotilla.engine import units as unit_names
from flotilla.engine.activation import plan_activation, settle
from flotilla.engine.container_images import image_of, pin_units
from flotilla.engine.deploy import image_pins
from flotilla.engine.deploy.adoption import check_revision
from flotilla.engine.deploy.errors import StepFailed
from flotilla.engine.deploy.revision_cache import RevisionCache
from flotilla.engine.deploy.slots import Call
from flotilla.engine.deploy.step_records import Ports
from flotilla.engine.errors import UnitFailedError
from flotilla.engine.records import Revision, Service
from flotilla.engine.revisions import binding_for


class RevisionUnits:
    """The revisions of one run and their units; `call` makes each port call (its span and
    retries), `keep_lease` runs between the settle loop's looks."""

    def __init__(
        self,
        ports: Ports,
        service: Service,
        *,
        call: Call,
        keep_lease: Callable[[], None],
        revisions: RevisionCache,
    ) -> None:
        self.ports = ports
        self.service = service
        self._call = call
        self._keep_lease = keep_lease
        self._revisions = revisions  # shared by the runner's deploys
        self._opened: dict[str, dict[str, dict[str, str]]] = {}  # this run's only

    def running_pins(self, instance_id: str, revision_id: str) -> dict[str, str]:
        """Unit → digest the revision's container units run on this instance, as its
        deploys recorded; the deploys are read only if the revision has a container unit."""
        if not any(image_of(text) for text in self.revision(revision_id).units.values()):
            return {}
        store = self.ports.store
        deploys = self._call(
            "store.list_instance_deploys",
            lambda: store.list_instance_deploys(self.service.name, instance_id),
        )
        return image_pins.left_running(deploys, revision_id)

    def stop_all_but(self, *, keep: set[str] | None = None, revision: str | None = None) -> None:
        """Stop and remove every owned unit except `keep` (installed names) or, without a
        plan, except the units named after `revision`."""
        runtime = self.ports.runtime
        owned = self._call("runtime.owned_units", runtime.owned_units)
        if keep is None:
            keep = {n for n in owned if revision and unit_names.belongs_to(n, revision)}
        doomed = [name for name in owned if name not in keep]
        if doomed:
            self._call("runtime.stop", lambda: runtime.stop(doomed))
            self._call("runtime.remove", lambda: runtime.remove(doomed))

    def revision(self, revision_id: str) -> Revision:
        """A revision, read once (revisions never change once stored) and checked against
        its id before anything of it reaches disk, the runtime or the cache."""
        key = (self.service.name, revision_id)
        found = self._revisions.get(key)
        if found is None:
            found = self._call(
                "store.get_revision",
                lambda: self.ports.store.get_revision(self.service.name, revision_id),
            )
            check_revision(found, service=self.service.name, revision_id=revision_id)
            self._revisions.put(key, found)
        return found

    def environments(self, revision: Revision) -> dict[str, dict[str, str]]:
        """The revision's environments, opened (a KMS Decrypt) once per run for the unit
        plan and `starting`; secret: held by this object only, never stored or logged."""
        if revision.environment is None:
            return {}
        if revision.id not in self._opened:
            sealed, binding = revision.environment, binding_for(revision)
            self._opened[revision.id] = self._call(
                "secrets.open", lambda: self.ports.secrets.open(self.service.name, sealed, binding)
            )
        return self._opened[revision.id]

    def start(
        self,
        revision_id: str,
        *,
        names: Mapping[str, str] | None = None,
        only: Sequence[str] | None = None,
        images: Mapping[str, str] | None = None,
    ) -> None:
        """Install, start (the runtime returns once the units settled), and check that the
        units run well through the service's settle period. `names` keeps units under the
        installed names they already run under (a plan's) and `only` (installed names)
        starts just the changed ones: a kept oneshot is not run again. `images` pins
        container units (installed name → digest reference)."""
        revision = self.revision(revision_id)
        environments = self.environments(revision)
        runtime = self.ports.runtime
        installed = _installed(revision, names)
        unit_files = pin_units(revision.units, installed, images)
        self._call(
            "runtime.install",
            lambda: runtime.install(revision.id, unit_files, environments, names),
        )
        to_start = [
            installed[name]
            for name in plan_activation(revision.units).start
            if only is None or installed[name] in only
        ]
        try:
            self._call("runtime.start", lambda: runtime.start(to_start))
            self.require_well(revision, names, settle_seconds=self.service.settle_seconds)
        except UnitFailedError as failed:
            raise StepFailed(failed.message) from failed

    def require_well(
        self,
        revision: Revision,
        names: Mapping[str, str] | None = None,
        *,
        settle_seconds: float | None = None,
    ) -> None:
        """Every started unit running well (active, or a oneshot done with success); just
        after starting (`settle_seconds` given), staying so through the settle period. The
        one settle loop, keeping the lease alive between looks."""
        plan = plan_activation(revision.units)
        every = _installed(revision, names)
        installed = {every[name]: name for name in plan.start}
        starting = settle_seconds is not None
        settle(
            list(installed),
            lambda names: self._call("runtime.status", lambda: self.ports.runtime.status(names)),
            clock=self.ports.clock,
            run_once=[name for name, unit in installed.items() if unit in plan.run_once],
            hold=settle_seconds or 0.0,
            poll=1.0,
            what="failed to start" if starting else "is not running",
            just_started=starting,
            between=self._keep_lease,
        )


def _installed(revision: Revision, names: Mapping[str, str] | None) -> dict[str, str]:
    """Each unit of the revision → its installed name (a plan's, else the revision's own)."""
    return {
        unit: (names or {}).get(unit) or unit_names.installed_name(unit, revision.id)
        for unit in revision.units
    }
