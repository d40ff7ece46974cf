"""Container units pulled and pinned, on a real docker engine, a real registry on loopback
and the real systemd user manager (tests/support/docker_engine.py, systemd_manager.py).

A revision made by the container shorthand (an env file with DOCKER_IMAGE, read by
`revision add`'s own reader) is deployed; then the tag is moved in the registry, as a
build pipeline pushing a new image would. What the instance runs must not follow the tag:
not after systemd restarts the unit, not after the units are gone and the agent restores
them (a reboot: unit files live on tmpfs), and a rollback runs the digest its deploy
recorded. A new deploy that starts the unit again pulls, and runs the moved tag. Across
two instances (each with its own engine and manager, one registry), a tag moved between
their deploys leaves the first on its image while the second runs the new one.

The manager has no docker.service of its own: a stand-in unit takes its name, so that the
generated unit's `Requires=docker.service` holds; the engine itself is the test's.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from flotilla.adapters.docker_images import DockerImages
from flotilla.adapters.systemd import SystemdRuntime
from flotilla.cli.agent_assembly import AgentAdapters
from flotilla.cli.revision_sources import from_files
from flotilla.engine import units
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.records import Revision
from flotilla.engine.revisions import build_revision
from tests.support.cluster import Cluster
from tests.support.docker_engine import DockerEngine
from tests.support.systemd_manager import PrivateSystemdManager, require_private_manager

pytestmark = pytest.mark.systemd

BROKEN = "[Service]\nType=simple\nExecStart=/bin/sh -c 'exit 3'\n"
DOCKER_STAND_IN = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
CONTAINER_SECONDS = 60.0  # a bound on waiting for a restarted container, not an expectation


@dataclass
class Host:
    cluster: Cluster
    engine: DockerEngine
    manager: PrivateSystemdManager

    def revision(self, label: str, files: dict[str, str]) -> Revision:
        """A revision as `revision add` reads it from a directory of these files."""
        sources = from_files({name: text.encode() for name, text in files.items()})
        revision = build_revision(
            "api", label, sources.units, sources.environments, self.cluster.secrets,
            self.cluster.clock.now(),
        )  # fmt: skip
        return self.cluster.store.put_revision(revision)

    def deploy(self, revision: Revision) -> DeployCheckpoint:
        self.cluster.assign("i-1", revision)
        return self.cluster.store.get_deploy(self.cluster.deploy("i-1"))

    def container(self, revision: Revision, unit: str = "app.service") -> str:
        return units.installed_name(unit, revision.id).removesuffix(".service")

    def runs(self, container: str, *, after: float | None = None) -> str:
        """The digest reference the container was started from, waiting (bounded) for one
        started after `after` (a `time.time()`), e.g. after a restart; checked against the
        image the container really runs."""
        deadline = time.monotonic() + CONTAINER_SECONDS
        while True:
            found = self.engine.docker(
                "inspect", "--format", "{{.Config.Image}} {{.State.StartedAt}} {{.State.Running}}",
                container, check=False,
            )  # fmt: skip
            if found.returncode == 0:
                image, started, running = found.stdout.split()
                if running == "true" and (after is None or _epoch(started) > after):
                    really = self.engine.docker(
                        "inspect", "--format", "{{.Image}}", container
                    ).stdout.strip()
                    assert really == self.engine.image_id(image), (image, really)
                    return image
            if time.monotonic() > deadline:
                raise AssertionError(f"container {container} did not run: {found.stderr}")
            time.sleep(0.2)


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    require_private_manager()
    with DockerEngine(tmp_path / "docker") as engine, PrivateSystemdManager() as manager:
        (manager.unit_dir / "docker.service").write_text(DOCKER_STAND_IN)
        assert manager.systemctl("set-environment", f"DOCKER_HOST={engine.host}").returncode == 0
        assert manager.systemctl("daemon-reload").returncode == 0
        cluster = Cluster(
            tmp_path, with_load_balancer=False, images=DockerImages(environment=engine.environment)
        )
        cluster.runtimes["i-1"] = SystemdRuntime(
            bus_address=manager.bus_address,
            unit_dir=manager.unit_dir,
            environment_dir=tmp_path / "env",
        )
        cluster.instance("i-1")
        try:
            yield Host(cluster, engine, manager)
        finally:
            runtime = cluster.runtimes["i-1"]
            owned = runtime.owned_units()
            runtime.stop(owned)
            runtime.remove(owned)


def test_a_moved_tag_changes_nothing_an_instance_runs_until_a_deploy_pulls_it(
    host: Host,
) -> None:
    image = f"{host.engine.registry}/app:stable"
    first = host.engine.publish("app", "stable", says="first")
    shared = host.cluster.root / "shared"
    shared.mkdir()
    settings = (
        f"DOCKER_IMAGE={image}\nDOCKER_LOG_DRIVER=none\n"
        f"DOCKER_VOLUME_SHARED={shared}:/shared:ro\nGREETING=hello\n"
    )
    v1 = host.revision("v1", {"app.env": settings})
    done = host.deploy(v1)
    assert done.outcome is Outcome.SUCCEEDED, done.error
    name = host.container(v1)
    assert done.images == {f"{name}.service": first}
    assert host.runs(name) == first
    # The container got its own variable, and no DOCKER_* or FLOTILLA_* setting: those
    # are options of `docker run`.
    env = host.engine.docker("inspect", "--format", "{{json .Config.Env}}", name).stdout
    assert '"GREETING=hello"' in env
    assert "DOCKER_" not in env
    assert "FLOTILLA_" not in env
    options = (
        "{{.HostConfig.LogConfig.Type}} "
        "{{range .Mounts}}{{.Source}}:{{.Destination}}:{{.RW}}{{end}}"
    )
    assert host.engine.docker("inspect", "--format", options, name).stdout.split() == [
        "none",
        f"{shared}:/shared:false",
    ]

    moved = host.engine.publish("app", "stable", says="second")
    assert moved != first
    # The moved tag reaches this machine too (another pull of it, by anyone).
    host.engine.docker("pull", image)

    # systemd restarts the unit: the installed file names the digest, not the tag.
    before = time.time()
    assert host.manager.systemctl("restart", f"{name}.service").returncode == 0
    assert host.runs(name, after=before) == first

    # The units are gone (a reboot wipes the tmpfs they live on); the agent restores them.
    runtime = host.cluster.runtime("i-1")
    runtime.stop(runtime.owned_units())
    runtime.remove(runtime.owned_units())
    instance = host.cluster.store.get_instance("api", "i-1")
    before = time.time()
    assert host.cluster.runner("i-1").restore_units(instance, host.cluster.service)
    assert host.runs(name, after=before) == first

    # A revision that starts the unit again pulls, and runs what the tag names now.
    v2 = host.revision("v2", {"app.env": f"DOCKER_IMAGE={image}\nGREETING=bye\n"})
    done = host.deploy(v2)
    assert done.outcome is Outcome.SUCCEEDED, done.error
    assert host.runs(host.container(v2)) == moved


def test_a_rollback_runs_the_digest_its_deploy_recorded_not_the_moved_tag(host: Host) -> None:
    image = f"{host.engine.registry}/app:stable"
    first = host.engine.publish("app", "stable", says="first")
    v1 = host.revision("v1", {"app.env": f"DOCKER_IMAGE={image}\nGREETING=hello\n"})
    assert host.deploy(v1).outcome is Outcome.SUCCEEDED
    moved = host.engine.publish("app", "stable", says="second")
    # v2 changes the container (so it is replaced) and adds a unit that cannot start.
    bad = host.revision(
        "bad", {"app.env": f"DOCKER_IMAGE={image}\nGREETING=bye\n", "broken.service": BROKEN}
    )
    done = host.deploy(bad)
    assert done.outcome is Outcome.ROLLED_BACK
    assert done.images is not None
    assert done.images[units.installed_name("app.service", bad.id)] == moved
    assert done.images[units.installed_name("app.service", v1.id)] == first
    assert host.runs(host.container(v1)) == first
    runtime = host.cluster.runtime("i-1")
    assert runtime.owned_units() == [units.installed_name("app.service", v1.id)]


def test_an_image_that_cannot_be_pulled_fails_the_deploy_and_the_old_one_keeps_running(
    host: Host,
) -> None:
    first = host.engine.publish("app", "stable")
    v1 = host.revision("v1", {"app.env": f"DOCKER_IMAGE={host.engine.registry}/app:stable\n"})
    assert host.deploy(v1).outcome is Outcome.SUCCEEDED
    missing = f"{host.engine.registry}/app:no-such-tag"
    v2 = host.revision("v2", {"app.env": f"DOCKER_IMAGE={missing}\n"})
    done = host.deploy(v2)
    assert done.outcome is not Outcome.SUCCEEDED
    assert done.error is not None
    assert done.error.startswith(f"app.service: cannot pull {missing}: ")
    assert "manifest unknown" in done.error
    assert host.runs(host.container(v1)) == first
    assert host.cluster.store.get_instance("api", "i-1").current_revision == v1.id
    assert os.path.exists(host.manager.unit_dir / f"{host.container(v1)}.service")


class Fleet(Cluster):
    """Instances each with an engine of their own (as machines have), one registry."""

    engines: dict[str, DockerEngine]

    def adapters(self, instance_id: str) -> AgentAdapters:
        engine = self.engines[instance_id]
        return dataclasses.replace(
            super().adapters(instance_id), images=DockerImages(environment=engine.environment)
        )


def test_a_tag_moved_mid_rollout_changes_nothing_on_an_instance_that_already_deployed(
    tmp_path: Path,
) -> None:
    require_private_manager()
    with ExitStack() as stack:
        fleet = Fleet(tmp_path, with_load_balancer=False)
        fleet.engines, hosts = {}, {}
        for instance_id in ("i-1", "i-2"):
            engine = stack.enter_context(DockerEngine(tmp_path / f"docker-{instance_id}"))
            manager = stack.enter_context(PrivateSystemdManager())
            (manager.unit_dir / "docker.service").write_text(DOCKER_STAND_IN)
            manager.systemctl("set-environment", f"DOCKER_HOST={engine.host}")
            manager.systemctl("daemon-reload")
            fleet.engines[instance_id] = engine
            fleet.runtimes[instance_id] = SystemdRuntime(
                bus_address=manager.bus_address,
                unit_dir=manager.unit_dir,
                environment_dir=tmp_path / f"env-{instance_id}",
            )
            stack.callback(_remove_units, fleet.runtimes[instance_id])
            fleet.instance(instance_id)
            hosts[instance_id] = Host(fleet, engine, manager)
        registry = fleet.engines["i-1"]  # i-1's registry serves both: one registry, two engines
        image = f"{registry.registry}/app:stable"
        first = registry.publish("app", "stable", says="first")
        v1 = hosts["i-1"].revision("v1", {"app.env": f"DOCKER_IMAGE={image}\n"})
        name = hosts["i-1"].container(v1)

        fleet.assign("i-1", v1)
        assert fleet.store.get_deploy(fleet.deploy("i-1")).outcome is Outcome.SUCCEEDED
        moved = registry.publish("app", "stable", says="second")  # mid-rollout
        fleet.assign("i-2", v1)
        assert fleet.store.get_deploy(fleet.deploy("i-2")).outcome is Outcome.SUCCEEDED

        # The instance that deploys after the move resolves the tag anew, on its own engine.
        assert hosts["i-2"].runs(name) == moved
        # The one that deployed before keeps its image, even restarted with the moved tag
        # already pulled onto its engine.
        fleet.engines["i-1"].docker("pull", image)
        before = time.time()
        assert hosts["i-1"].manager.systemctl("restart", f"{name}.service").returncode == 0
        assert hosts["i-1"].runs(name, after=before) == first


def _remove_units(runtime: SystemdRuntime) -> None:
    owned = runtime.owned_units()
    runtime.stop(owned)
    runtime.remove(owned)
