"""Real Debian 12 machines with systemd as PID 1, booted with systemd-nspawn, for tests.

What a private user manager cannot show (the templates' user data on a fresh machine, a
reboot, the system bus, sshd) is tested on these: a debootstrapped Debian 12 root, built
once and cached in build/machines/debian12-base/, copied per machine and booted with
`systemd-nspawn --boot`. The machines share the host's network namespace (as on EC2, where
169.254.169.254 and the stack's endpoints are reachable): servers a test runs on 127.0.0.1
are reachable from inside, ports a machine listens on are reachable from the host, so two
machines' sshd need different ports (`sshd_port`) or none.

Here, PID 1 is not systemd and there is no system bus: nspawn cannot register the machine
with systemd-machined or create a scope, hence `--register=no --keep-unit`. The host's
cgroups are the hybrid layout (v1 controllers, v2 at /sys/fs/cgroup/unified); nspawn 252
boots Debian 12's systemd on it as it is, no SYSTEMD_NSPAWN_UNIFIED_HIERARCHY needed.

Nothing outlives the test session: a machine is stopped by its context manager, by
`stop_all_machines()` (a session fixture and atexit call it), and nspawn gets SIGTERM when
the process that started it dies (`setpriv --pdeathsig`), which shuts the machine down.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from flotilla.cli.demo import cgroups

logger = logging.getLogger(__name__)

MACHINES_DIR = Path(__file__).resolve().parents[2] / "build" / "machines"
BASE_NAME = "debian12-base"
MIRROR = "http://deb.debian.org/debian"
# What a Debian cloud image has that matters here: systemd with logind and a system bus,
# sshd, curl and python3. Not python3-venv or python3-gi: the user data installs those.
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "ca-certificates",
    "curl",
    "procps",
    "iproute2",
    "sudo",
    "python3",
)
# Bump when _customise_base changes: a cached image built by an older harness is rebuilt.
_BASE_REVISION = 2
_MARKER = ".flotilla-base.json"
_SOURCES_LIST = f"""\
deb {MIRROR} bookworm main
deb {MIRROR} bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
"""
BOOT_TIMEOUT = 120.0  # seconds; a boot takes a few here, more on a loaded host
REBOOT_EXIT_STATUS = 133  # nspawn's status when the container rebooted (systemd-nspawn(1))
_MACHINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Commands run inside see only this environment: the test process's own (the fake AWS
# credentials of tests/conftest.py above all) must not leak into the machine.
_MACHINE_ENV = {"PATH": _MACHINE_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\r")
HOST_TOOLS = {  # the tool, and the Debian package it comes in
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nsenter": "util-linux",
    "setpriv": "util-linux",
    "ip": "iproute2",
    "ssh-keygen": "openssh-client",
}


class MachineError(Exception):
    """A machine could not be built, booted, reached or stopped; the message says which,
    with the tail of the log that explains it."""


def missing_host_tools() -> list[str]:
    """What this host lacks to boot machines, each with what to install."""
    missing = [f"{tool} (apt-get install {package})" for tool, package in HOST_TOOLS.items()]
    missing = [entry for entry in missing if shutil.which(entry.split()[0]) is None]
    if os.geteuid() != 0:
        missing.append("root (systemd-nspawn and `ip addr` need it)")
    return missing


def free_tcp_port() -> int:
    """A TCP port free on every address of the host now (for a machine's sshd, say)."""
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))  # noqa: S104 - the machines' servers listen on all
        return int(probe.getsockname()[1])


def log_tail(path: Path, lines: int = 60) -> str:
    """The last `lines` of a log file, without terminal escapes, ready for an error message."""
    if not path.exists():
        return f"({path} does not exist)"
    text = _ANSI.sub("", path.read_text(errors="replace"))
    return f"--- last {lines} lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


# --- the base image ------------------------------------------------------------------


def base_image(machines_dir: Path = MACHINES_DIR, packages: Sequence[str] = BASE_PACKAGES) -> Path:
    """The cached Debian 12 root, built first if it is missing, incomplete or was built with
    other packages. Concurrent callers wait for one builder (a file lock)."""
    machines_dir.mkdir(parents=True, exist_ok=True)
    root = machines_dir / BASE_NAME
    with _base_lock(machines_dir, exclusive=False):  # not to wait for others' copies
        if _is_complete(root, packages):
            return root
    with _base_lock(machines_dir, exclusive=True):
        if not _is_complete(root, packages):  # another builder may have finished meanwhile
            _build_base(machines_dir, root, packages)
    return root


@contextlib.contextmanager
def _base_lock(machines_dir: Path, exclusive: bool) -> Iterator[None]:
    """Held exclusively while building, shared while copying, so no copy reads a half-
    replaced image."""
    with (machines_dir / f"{BASE_NAME}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def _marker(packages: Sequence[str]) -> dict[str, object]:
    return {"revision": _BASE_REVISION, "suite": "bookworm", "packages": sorted(packages)}


def _is_complete(root: Path, packages: Sequence[str]) -> bool:
    marker = root / _MARKER
    return marker.exists() and json.loads(marker.read_text()) == _marker(packages)


def _build_base(machines_dir: Path, root: Path, packages: Sequence[str]) -> None:
    """debootstrap into a temporary folder beside the cache, then rename it into place: a
    build that is interrupted never leaves a root that looks finished."""
    for leftover in machines_dir.glob(f"{BASE_NAME}.partial-*"):
        shutil.rmtree(leftover)  # an interrupted build's; we hold the lock, nobody else builds
    partial = Path(tempfile.mkdtemp(prefix=f"{BASE_NAME}.partial-", dir=machines_dir))
    log = machines_dir / f"{BASE_NAME}.build.log"
    started = time.monotonic()
    command = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}"]
    _run_logged([*command, "bookworm", str(partial), MIRROR], log, timeout=1800)
    _customise_base(partial)
    (partial / _MARKER).write_text(json.dumps(_marker(packages)))
    if root.exists():
        outdated = root.rename(machines_dir / f"{BASE_NAME}.partial-outdated-{os.getpid()}")
        shutil.rmtree(outdated)
    partial.rename(root)
    logger.info("built %s in %.0f s", root, time.monotonic() - started)


def _customise_base(root: Path) -> None:
    """What a cloud image has and debootstrap does not: full apt sources, no machine
    identity (each copy gets its own id and sshd host keys)."""
    # mkdtemp made it 0700: as the machine's /, no service user could reach a file.
    root.chmod(0o755)
    (root / "etc/apt/sources.list").write_text(_SOURCES_LIST)
    (root / "etc/machine-id").write_text("")
    dbus_machine_id = root / "var/lib/dbus/machine-id"
    dbus_machine_id.unlink(missing_ok=True)
    dbus_machine_id.symlink_to("/etc/machine-id")  # as Debian's own images have it
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    for package in (root / "var/cache/apt/archives").glob("*.deb"):
        package.unlink()


def _run_logged(command: Sequence[str], log: Path, timeout: float) -> None:
    with log.open("w") as output:
        done = subprocess.run(
            command, stdout=output, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    if done.returncode != 0:
        raise MachineError(f"`{' '.join(command)}` failed ({done.returncode})\n{log_tail(log)}")


# --- machines -----------------------------------------------------------------------

_LIVE_MACHINES: set[BootedMachine] = set()  # for stop_all_machines(), the last resort


def stop_all_machines() -> None:
    """Stop every machine still running in this process (session teardown, atexit)."""
    for machine in list(_LIVE_MACHINES):
        machine.stop()


atexit.register(stop_all_machines)


class BootedMachine:
    """One Debian 12 machine: its own copy of the base root, hostname, machine id and sshd
    host keys, booted with systemd as PID 1.

        with BootedMachine("worker", sshd_port=2222) as worker:  # boots, waits for it
            worker.run(["systemctl", "start", "flotilla-agent"])
            worker.reboot()

    `sshd_port=None` masks ssh.service. On a clean exit the machine's folder is removed; when
    the block fails, it is kept (console log and root, for a post-mortem) until the next
    session's machines sweep it.
    """

    def __init__(
        self, name: str, *, sshd_port: int | None = None, machines_dir: Path = MACHINES_DIR
    ) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"machine name {name!r}: use lower-case letters, digits and dashes")
        self.name = name
        self.sshd_port = sshd_port
        self.machines_dir = machines_dir
        machines_dir.mkdir(parents=True, exist_ok=True)
        _sweep_stale_runs(machines_dir)
        # Unique per run: sessions on one host may boot machines of the same name at once.
        # (Not mkdtemp: its "_" is not allowed in nspawn's machine name, made from this.)
        self.run_dir = machines_dir / f"run-{name}-{secrets.token_hex(4)}"
        self.run_dir.mkdir(mode=0o700)
        self._owner: IO[str] | None = _owner_lock(self.run_dir)
        self.root = self.run_dir / "root"
        self.console_log = self.run_dir / "console.log"
        self.boot_seconds: list[float] = []  # one per boot, until running/degraded
        self._nspawn_name = self.run_dir.name.removeprefix("run-")
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._cgroups: list[Path] = []
        self._started_at = 0.0
        self._leader: int | None = None
        self._pid_namespace = ""

    @property
    def leader_pid(self) -> int | None:
        """The host's PID of the machine's systemd while it runs."""
        return self._leader if self._is_running() else None

    # --- lifecycle ---

    def __enter__(self) -> BootedMachine:
        self.boot()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is None:
            self.remove()
        else:
            logger.warning("machine %s kept for a post-mortem in %s", self.name, self.run_dir)

    def boot(self, timeout: float = BOOT_TIMEOUT) -> str:
        """Create the root if needed, start the machine and wait until it has booted."""
        self.start()
        return self.wait_until_booted(timeout)

    def start(self) -> None:
        """Start nspawn on the machine's root (made from the base image the first time),
        without waiting for the boot: start machines one by one, wait for them together."""
        if not self.root.exists():
            self._make_root()
        _LIVE_MACHINES.add(self)
        boot = len(self.boot_seconds) + 1
        with self.console_log.open("a") as console:
            console.write(f"=== boot {boot}, started by the harness ===\n")
            console.flush()
            # A cgroup of its own: from one shared cgroup, `--keep-unit` would put every
            # machine's systemd in the same `payload` tree, where same-named units of two
            # machines (journald, dbus, user-data) share a cgroup (cli/demo/cgroups.py).
            self._cgroups = cgroups.fresh(f"flotilla-machine-{self._nspawn_name}-{boot}")
            self._nspawn = subprocess.Popen(
                cgroups.joined(self._cgroups, self._nspawn_command()),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env={"PATH": _MACHINE_PATH, "TERM": "dumb"},
                start_new_session=True,  # Ctrl-C reaches pytest, which stops machines in order
            )
        self._started_at = time.monotonic()
        self._leader = self._find_leader(timeout=30)
        self._pid_namespace = os.readlink(f"/proc/{self._leader}/ns/pid")

    def _nspawn_command(self) -> list[str]:
        return [
            # SIGTERM to nspawn shuts the machine down: sent if the test process dies. The
            # signal follows the thread that started nspawn, so start machines from the
            # main thread.
            *("setpriv", "--pdeathsig", "TERM", "--"),
            *("systemd-nspawn", "--directory", str(self.root), "--boot"),
            *("--register=no", "--keep-unit", "--machine", self._nspawn_name),
            *("--hostname", self.name, "--resolv-conf=copy-host", "--link-journal=no"),
            # The machine shares the host's network namespace: it must never set the host's
            # firewall (nspawn already withholds CAP_NET_ADMIN then; said here, not assumed).
            # So the workers' metadata firewall unit is skipped there (ConditionCapability=).
            "--drop-capability=CAP_NET_ADMIN",
            # read-only: a console with no TTY of ours, its output copied into the log.
            "--console=read-only",
            # Arguments for the machine's systemd: plain status lines, and every journal
            # line on the console too, so the log explains a failed boot or unit.
            *("--", "systemd.log_color=0", "systemd.show_status=1"),
            "systemd.journald.forward_to_console=1",
        ]

    def _make_root(self) -> None:
        base = base_image(self.machines_dir)
        with _base_lock(self.machines_dir, exclusive=False):
            command = ["cp", "-a", "--reflink=auto", str(base), str(self.root)]
            subprocess.run(command, check=True, capture_output=True)
        self._personalise()

    def _personalise(self) -> None:
        """Its own hostname, machine id and sshd host keys, and sshd on its port or masked."""
        etc = self.root / "etc"
        (etc / "hostname").write_text(self.name + "\n")
        (etc / "hosts").write_text(
            f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n::1 localhost ip6-localhost\n"
        )
        (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
        subprocess.run(["ssh-keygen", "-A", "-f", str(self.root)], check=True, capture_output=True)
        if self.sshd_port is None:
            for unit in ("ssh.service", "ssh.socket"):
                (etc / "systemd/system" / unit).symlink_to("/dev/null")
        else:
            (etc / "ssh/sshd_config.d/00-port.conf").write_text(f"Port {self.sshd_port}\n")

    def _find_leader(self, timeout: float) -> int:
        """The machine's systemd: nspawn's child once it has become `systemd`."""
        assert self._nspawn is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._nspawn.poll() is not None:
                raise self._error(f"systemd-nspawn exited ({self._nspawn.returncode}) at start")
            leader = _child_named(self._nspawn.pid, "systemd")
            if leader is not None:
                return leader
            time.sleep(0.05)
        raise self._error(f"no systemd under systemd-nspawn after {timeout:.0f} s")

    def wait_until_booted(self, timeout: float = BOOT_TIMEOUT) -> str:
        """Wait for `systemctl is-system-running` to say running or degraded (the failed
        units are logged); the state is returned. Anything else by the deadline fails."""
        deadline = time.monotonic() + timeout
        state = "unknown"
        while time.monotonic() < deadline:
            self._require_nspawn("while booting")
            remaining = max(deadline - time.monotonic(), 1.0)
            asked = self._exec(["systemctl", "is-system-running", "--wait"], remaining)
            state = asked.stdout.strip() if asked is not None else "still starting"
            if state in ("running", "degraded"):
                self.boot_seconds.append(time.monotonic() - self._started_at)
                if state == "degraded":
                    logger.warning("%s booted degraded:\n%s", self.name, self.failed_units())
                return state
            time.sleep(0.2)  # the bus is not up yet: systemctl gives up at once
        raise self._error(
            f"not booted after {timeout:.0f} s (state: {state})\n"
            f"failed units:\n{self.failed_units()}\n{self.journal(lines=40)}"
        )

    def reboot(self, timeout: float = BOOT_TIMEOUT) -> str:
        """Reboot from inside (`systemctl reboot`), start nspawn again on the same root when
        it exits with 133, as systemd-nspawn@.service's RestartForceExitStatus=133 does, and
        wait for the boot: /run and /tmp are empty again, the disk is kept."""
        self._exec(["systemctl", "reboot"], 30)  # returns once the job is queued
        status = self._wait_for_exit(timeout)
        if status != REBOOT_EXIT_STATUS:
            raise self._error(f"`systemctl reboot`: nspawn exited with {status}, not 133")
        self._forget_exited()
        self.start()
        return self.wait_until_booted(timeout)

    def poweroff(self, timeout: float = 60.0) -> None:
        """Power off from inside (`systemctl poweroff`) and wait for nspawn to exit."""
        self._exec(["systemctl", "poweroff"], 30)
        status = self._wait_for_exit(timeout)
        self.stop()
        if status != 0:
            raise self._error(f"`systemctl poweroff`: nspawn exited with {status}, not 0")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the machine whatever its state; never leaves a process behind. Idempotent."""
        nspawn = self._nspawn
        if nspawn is not None and nspawn.poll() is None:
            nspawn.send_signal(signal.SIGTERM)  # nspawn asks the machine's systemd to halt
            if self._wait_for_exit(timeout) is None:
                logger.warning("%s did not halt in %.0f s: killed", self.name, timeout)
                self._kill_leader()  # the whole PID namespace goes with it
                with contextlib.suppress(subprocess.TimeoutExpired):
                    nspawn.wait(timeout=10)
                nspawn.kill()
                nspawn.wait()
        self._kill_leader()  # if nspawn died first, its machine may still run
        self._forget_exited()
        _LIVE_MACHINES.discard(self)

    def remove(self) -> None:
        """Delete the machine's folder (root and console log); stops it first."""
        self.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._owner is not None:
            self._owner.close()
            self._owner = None

    def _wait_for_exit(self, timeout: float) -> int | None:
        assert self._nspawn is not None
        try:
            return self._nspawn.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _kill_leader(self) -> None:
        """SIGKILL the machine's PID 1 if it is still ours (same PID namespace)."""
        if self._leader is None:
            return
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{self._leader}/ns/pid") == self._pid_namespace:
                os.kill(self._leader, signal.SIGKILL)

    def _forget_exited(self) -> None:
        self._leader = None
        cgroups.remove(self._cgroups, timeout=10)  # whatever is left of it goes too
        self._cgroups = []
        # nspawn leaves this behind when the host's /run is not a tmpfs (as here).
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self._nspawn_name}", ignore_errors=True)

    # --- inside the machine ---

    def run(
        self,
        command: Sequence[str],
        *,
        timeout: float = 60.0,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` inside (its mount, UTS, IPC and PID namespaces; the network is the
        host's anyway) with a clean environment; `check` fails on a non-zero exit."""
        done = self._exec(command, timeout, input)
        if done is None:
            raise self._error(f"`{' '.join(command)}` did not finish in {timeout:.0f} s")
        if check and done.returncode != 0:
            raise MachineError(
                f"`{' '.join(command)}` failed ({done.returncode}) on {self.name}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    def sh(
        self, script: str, *, timeout: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`run(["sh", "-c", script])`: for pipes and redirections."""
        return self.run(["sh", "-c", script], timeout=timeout, check=check)

    def _exec(
        self, command: Sequence[str], timeout: float, input: str | bytes | None = None
    ) -> subprocess.CompletedProcess[str] | None:
        """`command` through nsenter; None if it timed out (then it is killed, with the
        process nsenter forked inside: both are in the session killed)."""
        leader = self._require_nspawn(f"to run {command[0]}")
        argv = ["nsenter", f"--target={leader}", "--mount", "--uts", "--ipc", "--pid", "--"]
        process = subprocess.Popen(
            [*argv, *command],
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_MACHINE_ENV,
            start_new_session=True,
        )
        data = input.encode() if isinstance(input, str) else input
        try:
            stdout, stderr = process.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return None
        output, errors = (stream.decode(errors="replace") for stream in (stdout, stderr))
        return subprocess.CompletedProcess(list(command), process.returncode, output, errors)

    def _require_nspawn(self, doing: str) -> int:
        if self._nspawn is None or self._leader is None:
            raise MachineError(f"machine {self.name} is not started ({doing})")
        if self._nspawn.poll() is not None:
            raise self._error(f"systemd-nspawn exited ({self._nspawn.returncode}) {doing}")
        return self._leader

    def failed_units(self) -> str:
        done = self._exec(["systemctl", "--failed", "--no-legend", "--plain"], 30)
        if done is None:
            return "(systemctl --failed did not answer)"
        return done.stdout.strip() or "(none)"

    def journal(self, unit: str | None = None, lines: int | None = None) -> str:
        """journalctl's output for every boot (of `unit`, the last `lines`); read from the
        root's files when the machine is not running."""
        options = ["--no-pager", "--quiet", *(["--unit", unit] if unit else [])]
        options += ["--lines", str(lines)] if lines else []
        if self._is_running():
            done = self._exec(["journalctl", *options], 60)
        else:
            directory = ["--directory", str(self.root / "var/log/journal")]
            done = subprocess.run(
                ["journalctl", *directory, *options], capture_output=True, text=True, check=False
            )
        return done.stdout if done is not None else "(journalctl hung)"

    # --- files ---

    def write_file(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        """Write `content` to `path` in the machine (parents made), owned by root. Written
        from inside while it runs (so /run and symlinks are the machine's), else into the
        root folder."""
        if self._is_running():
            script = 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"'
            self._write_inside(["sh", "-c", script, "sh", path, f"{mode:o}"], content)
            return
        target = self._root_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        with os.fdopen(os.open(target, flags, mode), "wb") as written:
            written.write(content.encode() if isinstance(content, str) else content)
        os.chmod(target, mode)  # the umask must not narrow what the caller asked for

    def read_file(self, path: str) -> str:
        if self._is_running():
            return self.run(["cat", "--", path]).stdout
        return self._root_path(path).read_text()

    def _write_inside(self, command: Sequence[str], content: str | bytes) -> None:
        done = self._exec(command, 60, content)
        if done is None or done.returncode != 0:
            raise MachineError(f"cannot write {command[-2]} on {self.name}: {done}")

    def _root_path(self, path: str) -> Path:
        target = self.root / path.lstrip("/")
        # A stopped root's absolute symlinks point into the host: never follow them out.
        if not target.parent.resolve().is_relative_to(self.root.resolve()):
            raise MachineError(f"{path} leads out of {self.name}'s root ({target.parent})")
        return target

    def _is_running(self) -> bool:
        return self._leader is not None and self._nspawn is not None and self._nspawn.poll() is None

    def _error(self, what: str) -> MachineError:
        return MachineError(f"machine {self.name}: {what}\n{log_tail(self.console_log)}")


def _child_named(parent: int, name: str) -> int | None:
    """A child process of `parent` whose command name is `name`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            command, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") :]
            if command == name and int(rest.split()[2]) == parent:
                return int(stat.parent.name)
    return None


def _owner_lock(run_dir: Path) -> IO[str]:
    """An exclusive lock that says `run_dir` is in use, held while the returned file is open
    (so released when the process dies). Locked before it gets the name a sweep looks for."""
    unnamed = run_dir / "owner.lock.new"
    lock = unnamed.open("a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    unnamed.rename(run_dir / "owner.lock")
    return lock


@functools.cache
def _sweep_stale_runs(machines_dir: Path) -> None:
    """Remove machine folders whose owner died or kept them after a failure (their owner
    lock is free). Once per process: a folder kept by a failed test stays for a post-mortem
    until the next session."""
    for owner_lock in machines_dir.glob("run-*/owner.lock"):
        with owner_lock.open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live machine of this or another session
            shutil.rmtree(owner_lock.parent, ignore_errors=True)
