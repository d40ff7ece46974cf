"""The container images contract: one suite, run against the docker CLI adapter on a real
engine pulling from a real registry on loopback (tests/support/docker_engine.py), and
against the memory fake that the engine's unit tests use.

`Harness.publish` pushes a new image under a tag (moving it), as a build pipeline would;
the suite then checks what `pull` answers: the digest of what the tag named at the pull,
never later, and a clear `ImagePullError` for what cannot be pulled.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flotilla.adapters.docker_images import DockerImages, repository
from flotilla.adapters.memory_images import MemoryImages
from flotilla.engine.errors import ImagePullError, ValidationError
from flotilla.engine.ports import ContainerImages
from tests.support.docker_engine import DockerEngine

DIGEST_REFERENCE = re.compile(r"^(?P<repository>.+)@sha256:[0-9a-f]{64}$")


@dataclass
class Harness:
    images: ContainerImages
    registry: str  # the registry's address, prefixed to image names
    publish: Callable[[str, str], str]  # (name, tag) -> name@sha256:… of a new image
    local_copy: Callable[[str], bool]  # whether the reference is on this machine (docker)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    with DockerEngine(tmp_path_factory.mktemp("docker")) as started:
        yield started


@pytest.fixture(params=["docker", "memory"])
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "docker":
        engine: DockerEngine = request.getfixturevalue("engine")

        def present(reference: str) -> bool:
            return engine.docker("image", "inspect", reference, check=False).returncode == 0

        return Harness(
            DockerImages(environment=engine.environment),
            engine.registry,
            lambda name, tag: engine.publish(name, tag),
            present,
        )
    memory = MemoryImages()
    return Harness(
        memory, "127.0.0.1:5000", lambda n, t: memory.publish(f"127.0.0.1:5000/{n}:{t}"), bool
    )


def test_a_pull_answers_the_digest_the_tag_names(harness: Harness) -> None:
    published = harness.publish("web", "stable")
    pulled = harness.images.pull(f"{harness.registry}/web:stable")
    assert pulled == published
    found = DIGEST_REFERENCE.fullmatch(pulled)
    assert found is not None
    assert found.group("repository") == f"{harness.registry}/web"
    assert harness.local_copy(pulled)


def test_a_moved_tag_is_pulled_again_and_answers_the_new_digest(harness: Harness) -> None:
    first = harness.publish("api", "stable")
    assert harness.images.pull(f"{harness.registry}/api:stable") == first
    second = harness.publish("api", "stable")
    assert second != first
    # A copy of the tag is already here; a pull still asks the registry.
    assert harness.images.pull(f"{harness.registry}/api:stable") == second
    # The old digest still names the old image.
    assert harness.images.pull(first) == first


def test_a_digest_reference_pulls_that_image(harness: Harness) -> None:
    published = harness.publish("db", "v1")
    harness.publish("db", "v1")  # the tag moves on; the digest does not
    assert harness.images.pull(published) == published


@pytest.mark.parametrize("missing", ["{registry}/nothing:here", "{registry}/web:no-such-tag"])
def test_what_cannot_be_pulled_fails_with_the_reason(harness: Harness, missing: str) -> None:
    harness.publish("web", "stable")
    image = missing.format(registry=harness.registry)
    with pytest.raises(ImagePullError) as raised:
        harness.images.pull(image)
    assert raised.value.message.startswith(f"cannot pull {image}: ")
    assert "unknown" in raised.value.message or "not found" in raised.value.message
    assert not raised.value.retryable


@pytest.mark.parametrize("bad", ["", "--help", "-q", "app:1 --quiet", "app;reboot"])
def test_a_reference_that_could_be_read_as_an_option_is_refused(harness: Harness, bad: str) -> None:
    with pytest.raises(ValidationError):
        harness.images.pull(bad)


def test_an_engine_out_of_reach_fails_the_pull_with_the_reason(tmp_path: Path) -> None:
    images = DockerImages(environment={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    with pytest.raises(ImagePullError, match=r"cannot pull 127\.0\.0\.1:1/app:1: .*daemon"):
        images.pull("127.0.0.1:1/app:1")


def test_a_missing_docker_cli_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ImagePullError, match=r"install docker\.io"):
        DockerImages(str(tmp_path / "docker")).pull("app:1")


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("app", "app"),
        ("app:1", "app"),
        ("127.0.0.1:5000/team/app:1", "127.0.0.1:5000/team/app"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app"),
        ("app@sha256:" + "a" * 64, "app"),
        ("app:1@sha256:" + "a" * 64, "app"),
    ],
)
def test_the_repository_of_a_reference(image: str, expected: str) -> None:
    assert repository(image) == expected
