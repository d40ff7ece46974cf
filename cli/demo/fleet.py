"""The demo's processes: real `flotilla scheduler` and `flotilla agent` daemons and CLI calls.

Each daemon is the same program an operator runs, started with the demo's environment and
its own log file; CLI commands are shown as a person would type them, with their output.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flotilla.cli.demo.systemd_manager import PrivateSystemdManager
from flotilla.cli.wiring import process_runtime
from flotilla.engine.errors import FlotillaError
from flotilla.engine.units import installed_name

FLOTILLA = [sys.executable, "-m", "flotilla.cli.main"]
_SOCKET_PATH_MAX = (
    100  # a Unix socket path has at most 107 bytes; the bus lives in a manager's root
)


class DemoError(FlotillaError):
    """A step of the demo did not do what it should; the message says which and where."""


@dataclass
class Daemon:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (the daemon finishes its step and exits), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Fleet:
    """Everything the demo started, so that it can all be stopped, whatever happens."""

    work: Path
    environment: dict[str, str]
    say: Callable[[str], None]
    service: str = "web"
    colour: bool = False
    runtime: str = "process"  # or "systemd": a private manager per instance
    events_topic: str | None = None  # where the schedulers publish rollout events
    daemons: dict[str, Daemon] = field(default_factory=dict)
    managers: dict[str, PrivateSystemdManager] = field(default_factory=dict)
    transcript: list[str] = field(default_factory=list)  # every CLI output, for the secret check

    def __post_init__(self) -> None:
        (self.work / "logs").mkdir(parents=True, exist_ok=True)

    # --- the CLI, as an operator types it ---------------------------------------------

    def cli(self, *arguments: str, show: bool = True, check: bool = True) -> str:
        self.say(f"  $ flotilla {' '.join(arguments)}")
        completed = subprocess.run(
            [*FLOTILLA, *arguments],
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = (completed.stdout + completed.stderr).rstrip()
        self.transcript.append(output)
        if show and output:
            for line in output.splitlines():
                self.say(f"    {line}")
        if check and completed.returncode != 0:
            raise DemoError(
                f"`flotilla {' '.join(arguments)}` exited {completed.returncode}: "
                f"{completed.stderr.strip() or completed.stdout.strip()}"
            )
        return completed.stdout

    # --- daemons -------------------------------------------------------------------------

    def start_scheduler(self, name: str) -> Daemon:
        topic = ["--events-topic", self.events_topic] if self.events_topic else []
        return self._start(
            name,
            ["scheduler", "--owner", name, "--interval", "10", "--lease-seconds", "6", *topic],
            {},
        )

    def start_agent(self, instance_id: str, *, kill_at: str | None = None) -> Daemon:
        extra = {"FLOTILLA_FAULT_KILL_AT": kill_at} if kill_at else {}
        arguments = [
            "agent",
            "--service", self.service,
            "--instance-id", instance_id,
            *self.runtime_options(instance_id),
            "--state-dir", str(self.state_dir(instance_id)),
            # The demo keeps everything in its work directory, on disk: its environments
            # are made up, and `--workdir` is the user's choice.
            "--allow-disk-state-dir",
            "--poll-interval", "1",  # each poll is two emulator calls; 4 agents add up
            "--agent-lease-seconds", "3",  # a heartbeat a second: the demo's TTL is short
            "--trace-file", str(self.spans),
        ]  # fmt: skip
        return self._start(instance_id, arguments, extra)

    def runtime_options(self, instance_id: str) -> list[str]:
        if self.runtime == "process":
            return ["--runtime", "process"]
        manager = self.managers[instance_id]
        return ["--runtime", "systemd", "--bus-address", manager.bus_address,
                "--unit-dir", str(manager.unit_dir)]  # fmt: skip

    def start_managers(self, instance_ids: list[str]) -> None:
        """A private `systemd --user` per instance, its files (and its units' working
        directory, its HOME) in the work directory, so nothing it runs goes unnoticed."""
        for instance_id in instance_ids:
            root = self.work / "managers" / instance_id
            if len(str(root / "xdg" / "bus")) > _SOCKET_PATH_MAX:
                self.say(f"    (the work directory's path is too long for a bus socket: "
                         f"{instance_id}'s manager lives in /tmp)")  # fmt: skip
                manager = PrivateSystemdManager(cgroup_prefix="flotilla-demo-")
            else:
                manager = PrivateSystemdManager(root=root, cgroup_prefix="flotilla-demo-")
            self.managers[instance_id] = manager  # before start: a failed start still stops
            manager.start()

    def announcement(self, instance_id: str, revision_id: str) -> Path:
        """Where the instance's web server says which port it listens on (web_server.py)."""
        name = installed_name("web.service", revision_id)
        if self.runtime == "systemd":
            # RuntimeDirectory=%N of the unit, under the manager's own XDG_RUNTIME_DIR.
            stem = name.removesuffix(".service")
            return self.managers[instance_id].runtime_dir / stem / "listening"
        return self.state_dir(instance_id) / "process" / "log" / f"{name}.log"

    def _start(self, name: str, arguments: list[str], extra: dict[str, str]) -> Daemon:
        log = self.work / "logs" / f"{name}.log"
        environment = {k: v for k, v in self.environment.items() if k != "FLOTILLA_FAULT_KILL_AT"}
        environment.update(extra)
        with log.open("ab") as out:
            process = subprocess.Popen(
                [*FLOTILLA, *arguments], env=environment, stdout=out, stderr=subprocess.STDOUT
            )
        daemon = Daemon(name, process, log)
        self.daemons[name] = daemon
        return daemon

    def state_dir(self, instance_id: str) -> Path:
        return self.work / "instances" / instance_id

    @property
    def spans(self) -> Path:
        return self.work / "spans.jsonl"

    def check_alive(self) -> None:
        """A daemon that died on its own (not one the demo killed) fails the demo clearly."""
        for daemon in self.daemons.values():
            if not daemon.running and daemon.process.returncode not in (0, -signal.SIGKILL):
                raise DemoError(
                    f"{daemon.name} exited with {daemon.process.returncode}; see {daemon.log}"
                )

    # --- the end -------------------------------------------------------------------------

    def stop_daemons(self) -> None:
        """All at once: each finishes its step (a second or more), so one by one adds up."""
        for daemon in self.daemons.values():
            if daemon.running:
                daemon.process.send_signal(signal.SIGTERM)
        for daemon in self.daemons.values():
            daemon.stop()  # waits for the SIGTERM above, SIGKILL if it hangs

    def stop_units(self) -> None:
        """Stop and remove every unit the agents started (units outlive their agent)."""
        for manager in self.managers.values():
            manager.stop()  # SIGTERM: the manager stops all its units, then its cgroups go
            if manager.root is not None:
                shutil.rmtree(manager.runtime_dir, ignore_errors=True)  # stale sockets
        self.managers.clear()
        instances = self.work / "instances"
        if instances.is_dir():
            for state_dir in sorted(instances.iterdir()):
                if not (state_dir / "process").is_dir():
                    continue  # its units ran on systemd
                runtime = process_runtime(state_dir)  # the agent's --state-dir
                runtime.stop(runtime.owned_units())
                runtime.remove(runtime.owned_units())

    def remove_state(self) -> None:
        shutil.rmtree(self.work / "instances", ignore_errors=True)
