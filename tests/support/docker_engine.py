"""A private docker engine and a registry on loopback, for the container tests.

`DockerEngine` starts Debian's `dockerd` with its own socket, data root, exec root and
containerd namespace under a temporary directory (so it shares nothing with another
engine on the machine), without networking of its own (`--bridge=none`, no iptables:
containers use the host's network), on the vfs storage driver (no overlay mounts needed),
and Debian's `docker-registry` on 127.0.0.1 at a free port (a loopback registry needs no
TLS: the engine trusts 127.0.0.0/8 as insecure registries by default). `publish` builds a
new tiny image from a busybox-static root filesystem with `docker import`, pushes it under
a tag (moving the tag if it existed) and returns its digest reference, as a CI pipeline
would. A missing tool fails the test with what to install (scripts/setup), never a skip.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"
REGISTRY = "/usr/bin/docker-registry"
BUSYBOX = "/bin/busybox"
STARTUP_SECONDS = 60.0  # a bound, not an expectation: both are usually up within a second
_images = itertools.count(1)


def require_docker_tools() -> None:
    missing = [path for path in (DOCKERD, DOCKER, REGISTRY, BUSYBOX) if not os.path.exists(path)]
    if missing:
        pytest.fail(
            f"cannot run a docker engine here: {', '.join(missing)} missing "
            "(./scripts/setup installs docker.io, docker-registry and busybox-static)",
            pytrace=False,
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DockerEngine:
    def __init__(self, root: Path) -> None:
        self.root = root
        # Sockets live in a short directory of their own: a unix socket's path is limited
        # to 107 bytes, and containerd's under a test's tmp_path is longer.
        self.sockets = Path(tempfile.mkdtemp(prefix="flotilla-docker-"))
        self.socket = self.sockets / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.registry = f"127.0.0.1:{_free_port()}"
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def environment(self) -> dict[str, str]:
        """What a docker client needs to talk to this engine (and nothing else)."""
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DOCKER_HOST": self.host,
                "HOME": str(self.root / "home")}  # fmt: skip

    def __enter__(self) -> DockerEngine:
        require_docker_tools()
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        tag = f"flotilla-test-{os.getpid()}-{self.root.name}"[:60]
        with (self.root / "dockerd.log").open("wb") as engine_log:
            self._processes.append(
                subprocess.Popen(
                    [
                        DOCKERD,
                        "--host",
                        self.host,
                        "--data-root",
                        str(self.root / "data"),
                        "--exec-root",
                        str(self.sockets / "exec"),
                        "--pidfile",
                        str(self.root / "dockerd.pid"),
                        "--containerd-namespace",
                        tag,
                        "--containerd-plugins-namespace",
                        f"{tag}-plugins",
                        "--storage-driver",
                        "vfs",
                        "--bridge",
                        "none",
                        "--iptables=false",
                        "--ip6tables=false",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=engine_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        config = self.root / "registry.yml"
        config.write_text(
            "version: 0.1\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'registry'}\n"
            f"http:\n  addr: {self.registry}\n  secret: flotilla-tests\n"
            "log:\n  level: warn\n"
        )
        with (self.root / "registry.log").open("wb") as registry_log:
            self._processes.append(
                subprocess.Popen(
                    [REGISTRY, "serve", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=registry_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            engine_up = self.docker("version", check=False).returncode == 0
            try:
                host, port = self.registry.split(":")
                socket.create_connection((host, int(port)), timeout=1).close()
                registry_up = True
            except OSError:
                registry_up = False
            if engine_up and registry_up:
                return
            exited = [p.args[0] for p in self._processes if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                logs = "".join(
                    (self.root / name).read_text(errors="replace")[-2000:]
                    for name in ("dockerd.log", "registry.log")
                )
                pytest.fail(
                    f"the docker engine or registry did not start ({exited or 'time-out'}):\n"
                    + logs,
                    pytrace=False,
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.socket.exists():
            running = self.docker("ps", "-aq", check=False).stdout.split()
            if running:
                self.docker("rm", "-f", *running, check=False)
        for process in reversed(self._processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        self._processes.clear()
        # vfs layers are plain directories; containerd leaves mounts in none of them.
        shutil.rmtree(self.root / "data", ignore_errors=True)
        shutil.rmtree(self.sockets, ignore_errors=True)

    def docker(
        self, *arguments: str, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [DOCKER, *arguments],
            input=stdin.decode("latin-1") if stdin is not None else None,
            capture_output=True,
            text=True,
            env=self.environment,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(arguments)} failed: {done.stderr.strip()}")
        return done

    def publish(self, name: str, tag: str, *, says: str | None = None) -> str:
        """A new image under `registry/name:tag` whose process prints `says` and waits;
        returns `registry/name@sha256:…`."""
        says = says or f"image {next(_images)} {time.time_ns()}"
        archive = self.root / f"rootfs-{next(_images)}.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in ("sh", "cat", "sleep"):
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
            data = says.encode()
            info = tarfile.TarInfo("says")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        image = f"{self.registry}/{name}:{tag}"
        # The shell is the container's PID 1, which ignores an untrapped SIGTERM: trap it,
        # so that `docker stop` ends the container at once.
        self.docker(
            "import",
            "--change",
            'CMD ["/bin/sh", "-c", "cat /says; echo; trap \'exit 0\' TERM; sleep 3600 & wait"]',
            str(archive), image,
        )  # fmt: skip
        self.docker("push", image)
        digest = self.docker("image", "inspect", "--format", "{{json .RepoDigests}}", image).stdout
        found = [d for d in json.loads(digest) if d.startswith(f"{self.registry}/{name}@")]
        assert found, f"no digest for {image}: {digest}"
        # Forget the local copy, so that a pull is what brings it back.
        self.docker("image", "rm", image, *found, check=False)
        archive.unlink()
        return str(found[0])

    def running_image(self, container: str) -> str:
        """The reference a container was started from (what `docker run` was given)."""
        return self.docker("inspect", "--format", "{{.Config.Image}}", container).stdout.strip()

    def image_id(self, reference: str) -> str:
        return self.docker("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()
