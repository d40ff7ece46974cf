"""DockerImages: the `ContainerImages` port on the docker engine, through its CLI.

`docker pull` prints the digest of the manifest it fetched (`Digest: sha256:…`); that is
what the pull resolved the tag to at that moment, read from the pull's own answer rather
than from a later `docker image inspect`, which another pull of the same tag in between
could already have moved. The reference returned is the image's repository with that
digest. The CLI reads DOCKER_HOST and the user's registry logins as `docker` does for
the units themselves, so the agent and its units see the same engine. The CLI's errors
become `ImagePullError` here, with its last line of output as the reason.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping

from flotilla.engine.container_images import check_image
from flotilla.engine.errors import ImagePullError

DOCKER = "/usr/bin/docker"
_DIGEST = re.compile(r"^Digest: (?P<digest>sha256:[0-9a-f]{64})\s*$", re.M)


class DockerImages:
    """Pulls with the docker CLI (`docker`), bounded by `timeout` seconds per pull."""

    def __init__(
        self,
        docker: str = DOCKER,
        *,
        timeout: float = 600.0,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.docker = docker
        self.timeout = timeout
        self.environment = dict(environment) if environment is not None else None

    def pull(self, image: str) -> str:
        check_image(image)
        try:
            done = subprocess.run(
                [self.docker, "pull", "--", image],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                env=self.environment,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ImagePullError(
                f"cannot pull {image}: {self.docker} is not installed (install docker.io)"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise ImagePullError(
                f"cannot pull {image}: no answer within {self.timeout:g} s"
            ) from exc
        except OSError as exc:
            raise ImagePullError(f"cannot pull {image}: {exc.strerror or exc}") from exc
        found = _DIGEST.search(done.stdout)
        if done.returncode != 0 or found is None:
            said = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise ImagePullError(f"cannot pull {image}: {said[:300]}")
        return f"{repository(image)}@{found.group('digest')}"


def repository(image: str) -> str:
    """`registry:5000/team/app:tag` and `app@sha256:…` → `registry:5000/team/app`, `app`."""
    name = image.partition("@")[0]
    head, colon, tag = name.rpartition(":")
    return head if colon and "/" not in tag else name
