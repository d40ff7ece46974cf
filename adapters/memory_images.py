"""Container images in memory: a registry of tags and digests, for unit tests and the
simulation. It passes the contract suite (tests/contract/test_container_images.py) that
the docker adapter passes against a real engine and registry. `publish` plays the part
of a `docker push`: it points a tag at a new image and returns that image's digest."""

from __future__ import annotations

import hashlib
import threading

from flotilla.adapters.docker_images import repository
from flotilla.engine.container_images import check_image
from flotilla.engine.errors import ImagePullError


class MemoryImages:
    """`ContainerImages` in one process; `pulled` lists every image pulled, in order."""

    def __init__(self) -> None:
        self._tags: dict[str, str] = {}  # name:tag -> sha256:…
        self._digests: set[str] = set()  # name@sha256:… that were ever published
        self._mutex = threading.Lock()
        self._published = 0  # digests are the same in every run (golden checkpoints)
        self.pulled: list[str] = []

    def publish(self, image: str) -> str:
        """Push a new image under `image` (name:tag); returns `name@sha256:…`."""
        with self._mutex:
            self._published += 1
            made = f"{image}#{self._published}"
            digest = "sha256:" + hashlib.sha256(made.encode()).hexdigest()
            reference = f"{repository(image)}@{digest}"
            self._tags[image] = digest
            self._digests.add(reference)
        return reference

    def pull(self, image: str) -> str:
        check_image(image)
        with self._mutex:
            self.pulled.append(image)
            if "@" in image:
                reference = f"{repository(image)}@{image.partition('@')[2]}"
                if reference in self._digests:
                    return reference
            elif image in self._tags:
                return f"{repository(image)}@{self._tags[image]}"
        raise ImagePullError(f"cannot pull {image}: manifest unknown")
