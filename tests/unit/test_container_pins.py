"""Container units pinned to digests: the pure pinning (engine/container_images.py) and
what a deploy does with it, on the memory image registry (which passes the same contract
suite as the docker adapter, tests/contract/test_container_images.py) and real processes.

The units here are written the way the shorthand writes them (an `Environment=
FLOTILLA_IMAGE=` line) but run `sleep`, so the process runtime can run them; what is
checked is the unit file the runtime was given, and the digests the deploy recorded. The
same behaviour on a real docker engine: tests/integration/test_containers_docker.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.adapters import items
from flotilla.adapters.memory_images import MemoryImages
from flotilla.cli.container_unit import docker_unit
from flotilla.engine import units
from flotilla.engine.checkpoint import Outcome
from flotilla.engine.container_images import image_of, pin, pin_units
from flotilla.engine.errors import ValidationError
from flotilla.engine.records import Revision
from flotilla.engine.revisions import build_revision
from tests.support.cluster import SLEEPER, Cluster
from tests.support.faults import Crash

IMAGE = "127.0.0.1:5000/app:stable"
DIGEST = "127.0.0.1:5000/app@sha256:" + "a" * 64


def container(image: str = IMAGE, note: str = "") -> str:
    return f"[Service]\nEnvironment=FLOTILLA_IMAGE={image}\nExecStart=/bin/sleep 600{note}\n"


def test_the_generated_unit_names_its_image_and_pins_to_a_digest() -> None:
    text, _ = docker_unit("app.env", "app", {"DOCKER_IMAGE": IMAGE})
    assert image_of(text) == IMAGE
    pinned = pin(text, DIGEST)
    assert image_of(pinned) == DIGEST
    assert pinned.replace(DIGEST, IMAGE) == text  # only the image line changed


def test_only_a_digest_can_pin_and_other_units_are_left_as_written() -> None:
    with pytest.raises(ValueError, match="not a digest"):
        pin(container(), "127.0.0.1:5000/app:other")
    assert image_of(SLEEPER) is None
    assert image_of("[Service]\nEnvironment=FLOTILLA_IMAGE='quoted'\n") is None
    unit_files = {"app.service": container(), "web.service": SLEEPER, "new.service": container()}
    names = {unit: f"flotilla-{unit[:-8]}-{'1' * 12}.service" for unit in unit_files}
    pinned = pin_units(unit_files, names, {names["app.service"]: DIGEST})
    assert image_of(pinned["app.service"]) == DIGEST
    assert pinned["web.service"] == SLEEPER
    assert pinned["new.service"] == container()  # no pin recorded: runs as written


def test_a_reference_that_could_be_read_as_an_option_is_never_passed_to_docker() -> None:
    with pytest.raises(ValidationError, match="not an image reference"):
        MemoryImages().pull("--config=/tmp")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, with_load_balancer=False, images=MemoryImages())
    made.instance("i-1")
    yield made
    made.shutdown()


def registry(cluster: Cluster) -> MemoryImages:
    assert isinstance(cluster.images, MemoryImages)
    return cluster.images


def revision(cluster: Cluster, label: str, unit_files: dict[str, str]) -> Revision:
    built = build_revision("api", label, unit_files, {}, cluster.secrets, cluster.clock.now())
    return cluster.store.put_revision(built)


def installed_text(cluster: Cluster, unit: str, revision_id: str) -> str:
    name = units.installed_name(unit, revision_id)
    return cluster.runtime("i-1").files.unit_path(name).read_text()


def deploy(cluster: Cluster, target: Revision) -> Outcome | None:
    cluster.assign("i-1", target)
    return cluster.store.get_deploy(cluster.deploy("i-1")).outcome


def test_a_deploy_pulls_once_records_the_digest_and_installs_it(cluster: Cluster) -> None:
    first = registry(cluster).publish(IMAGE)
    v1 = revision(cluster, "v1", {"app.service": container()})
    cluster.assign("i-1", v1)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.SUCCEEDED
    assert registry(cluster).pulled == [IMAGE]
    assert done.images == {units.installed_name("app.service", v1.id): first}
    assert image_of(installed_text(cluster, "app.service", v1.id)) == first
    # The record survives the store's codec; an item written before it reads as None.
    item = items.deploy_to_item(done)
    assert items.deploy_from_item(item).images == done.images
    del item["images"]
    assert items.deploy_from_item(item).images is None


def test_a_kept_container_unit_is_not_pulled_and_keeps_its_digest(cluster: Cluster) -> None:
    first = registry(cluster).publish(IMAGE)
    v1 = revision(cluster, "v1", {"app.service": container(), "web.service": SLEEPER})
    assert deploy(cluster, v1) is Outcome.SUCCEEDED
    registry(cluster).publish(IMAGE)  # the tag moves
    # Only web.service changes: app.service keeps running, and keeps the digest it runs.
    v2 = revision(cluster, "v2", {"app.service": container(), "web.service": SLEEPER + "# v2\n"})
    cluster.assign("i-1", v2)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.SUCCEEDED
    assert registry(cluster).pulled == [IMAGE]  # no second pull
    kept = units.installed_name("app.service", v1.id)
    assert done.units is not None
    assert done.units.after["app.service"] == kept
    assert done.images == {kept: first}
    assert image_of(installed_text(cluster, "app.service", v1.id)) == first


def test_a_pull_that_fails_fails_the_deploy_before_anything_stops(cluster: Cluster) -> None:
    registry(cluster).publish(IMAGE)
    v1 = revision(cluster, "v1", {"app.service": container()})
    assert deploy(cluster, v1) is Outcome.SUCCEEDED
    missing = "127.0.0.1:5000/app:missing"
    v2 = revision(cluster, "v2", {"app.service": container(missing)})
    cluster.assign("i-1", v2)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is not Outcome.SUCCEEDED
    assert done.failed_in == "locking"
    assert done.error == f"app.service: cannot pull {missing}: manifest unknown"
    runtime = cluster.runtime("i-1")
    assert runtime.owned_units() == [units.installed_name("app.service", v1.id)]
    assert [s.active_state for s in runtime.status(runtime.owned_units())] == ["active"]
    assert cluster.store.get_instance("api", "i-1").current_revision == v1.id


def test_a_resumed_deploy_installs_the_digest_it_recorded_not_the_moved_tag(
    cluster: Cluster,
) -> None:
    first = registry(cluster).publish(IMAGE)
    v1 = revision(cluster, "v1", {"app.service": container()})
    cluster.assign("i-1", v1)

    def crash(point: str, state: str) -> None:
        if (state, point) == ("starting", "before-step"):
            raise Crash

    with pytest.raises(Crash):
        cluster.deploy("i-1", fault=crash)
    registry(cluster).publish(IMAGE)  # the tag moves while the agent is down
    deploy_id = f"api/i-1.{cluster.store.get_instance('api', 'i-1').assignment_version}"
    done = cluster.runner("i-1").run(deploy_id, cluster.service)
    assert done.outcome is Outcome.SUCCEEDED
    assert registry(cluster).pulled == [IMAGE]
    assert image_of(installed_text(cluster, "app.service", v1.id)) == first


def test_restored_units_run_the_recorded_digest(cluster: Cluster) -> None:
    first = registry(cluster).publish(IMAGE)
    v1 = revision(cluster, "v1", {"app.service": container()})
    assert deploy(cluster, v1) is Outcome.SUCCEEDED
    registry(cluster).publish(IMAGE)
    runtime = cluster.runtime("i-1")
    runtime.stop(runtime.owned_units())
    runtime.remove(runtime.owned_units())  # a reboot: the unit files lived on tmpfs
    instance = cluster.store.get_instance("api", "i-1")
    assert cluster.runner("i-1").restore_units(instance, cluster.service)
    assert image_of(installed_text(cluster, "app.service", v1.id)) == first
    assert registry(cluster).pulled == [IMAGE]


def test_without_an_image_port_a_container_unit_runs_as_written(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, with_load_balancer=False)
    cluster.instance("i-1")
    try:
        v1 = revision(cluster, "v1", {"app.service": container()})
        cluster.assign("i-1", v1)
        done = cluster.store.get_deploy(cluster.deploy("i-1"))
        assert done.outcome is Outcome.SUCCEEDED
        assert done.images is None
        assert installed_text(cluster, "app.service", v1.id) == container()
    finally:
        cluster.shutdown()


def test_restored_units_keep_the_digest_of_a_unit_an_upgrade_kept(cluster: Cluster) -> None:
    first = registry(cluster).publish(IMAGE)
    v1 = revision(cluster, "v1", {"app.service": container(), "web.service": SLEEPER})
    assert deploy(cluster, v1) is Outcome.SUCCEEDED
    v2 = revision(cluster, "v2", {"app.service": container(), "web.service": SLEEPER + "#\n"})
    assert deploy(cluster, v2) is Outcome.SUCCEEDED  # app.service kept, under v1's name
    registry(cluster).publish(IMAGE)
    runtime = cluster.runtime("i-1")
    runtime.stop(runtime.owned_units())
    runtime.remove(runtime.owned_units())
    instance = cluster.store.get_instance("api", "i-1")
    assert cluster.runner("i-1").restore_units(instance, cluster.service)
    # Restored under v2's own names (as every restored unit is), on the digest it ran.
    assert image_of(installed_text(cluster, "app.service", v2.id)) == first


def test_a_rollback_restores_the_digests_of_the_units_it_brings_back(cluster: Cluster) -> None:
    first = registry(cluster).publish(IMAGE)
    v1 = revision(cluster, "v1", {"app.service": container()})
    assert deploy(cluster, v1) is Outcome.SUCCEEDED
    moved = registry(cluster).publish(IMAGE)
    bad = revision(cluster, "bad", {"app.service": container(note=" --no-such-option")})
    cluster.assign("i-1", bad)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.ROLLED_BACK
    assert done.images == {
        units.installed_name("app.service", v1.id): first,
        units.installed_name("app.service", bad.id): moved,
    }
    assert image_of(installed_text(cluster, "app.service", v1.id)) == first
