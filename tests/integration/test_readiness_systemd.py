"""`systemctl start flotilla-agent` returns when the agent is registered, and fails when the
agent exits first: the real `flotilla agent` (and `flotilla scheduler`) as a `Type=notify`
service of a private systemd manager (the shipped unit file, and transient units from
systemd-run), against a moto server. Inside that manager's mount namespace
/run/systemd/system exists, so the agent sees a host that runs systemd, as on a worker.

What each case reads comes from the store right after the start command returned: the
instance was never registered before, so finding it there means the start waited for it.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

from flotilla.engine.errors import NotFoundError
from flotilla.engine.records import Service
from tests.support.agents import FLOTILLA, AwsWorld, aws_world
from tests.support.aws import REGION
from tests.support.systemd_manager import PrivateSystemdManager, require_private_manager

pytestmark = [pytest.mark.systemd]
_numbers = itertools.count(1)


@dataclass
class Host:
    world: AwsWorld
    manager: PrivateSystemdManager
    work: Path

    def new_agent(self) -> tuple[str, str]:
        """A fresh service and an instance id nobody registered yet."""
        number = next(_numbers)
        service = f"ready-{number}"
        self.world.store.create_service(Service(service))
        return service, f"i-ready{number:04d}{os.getpid()}"

    def registered(self, service: str, instance_id: str) -> bool:
        try:
            self.world.store.get_instance(service, instance_id)
        except NotFoundError:
            return False
        return True

    def environment(self, *, region: bool = True) -> dict[str, str]:
        """What the agent gets, and nothing from this test process."""
        settings = {
            "FLOTILLA_ENDPOINT_URL": self.world.endpoint,
            "FLOTILLA_ENV": self.world.environment,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        if region:
            settings["AWS_REGION"] = REGION
        return settings

    def agent_command(self, service: str, instance_id: str, *runtime: str) -> list[str]:
        return [
            FLOTILLA, "agent",
            "--service", service,
            "--instance-id", instance_id,
            "--state-dir", str(self.work / instance_id),
            "--allow-disk-state-dir",  # the test's work directory is on disk
            "--poll-interval", "0.5",
            "--agent-lease-seconds", "3",
            *runtime,
        ]  # fmt: skip

    def systemd_runtime(self) -> list[str]:
        return ["--bus-address", self.manager.bus_address, "--unit-dir", str(self.manager.unit_dir)]

    def install_shipped_unit(self, command: list[str], environment: dict[str, str]) -> Path:
        """The unit file as shipped, with a drop-in for what differs here (as an operator's
        `systemctl edit` would): where flotilla is, its AWS settings, where output goes."""
        unit = resources.files("flotilla.cli").joinpath("flotilla-agent.service").read_text()
        (self.manager.unit_dir / "flotilla-agent.service").write_text(unit)
        log = self.work / f"agent-{time.time_ns()}.log"
        drop_in = self.manager.unit_dir / "flotilla-agent.service.d"
        drop_in.mkdir(exist_ok=True)
        lines = ["[Service]", "ExecStart=", "ExecStart=" + " ".join(command)]
        lines += NAMESPACES_OFF
        lines += [f"Environment={key}={value}" for key, value in environment.items()]
        lines += [f"StandardOutput=append:{log}", f"StandardError=append:{log}"]
        (drop_in / "test.conf").write_text("\n".join(lines) + "\n")
        reloaded = self.manager.systemctl("daemon-reload")
        assert reloaded.returncode == 0, reloaded.stderr
        return log

    def systemd_run(
        self, unit: str, command: list[str], environment: dict[str, str], kind: str = "notify"
    ) -> tuple[subprocess.CompletedProcess[str], Path]:
        log = self.work / f"{unit}.log"
        properties = [f"Type={kind}", "NotifyAccess=main", "TimeoutStartSec=120"]
        properties += [f"StandardOutput=append:{log}", f"StandardError=append:{log}"]
        run = subprocess.run(
            ["systemd-run", "--user", "--quiet", f"--unit={unit}"]
            + [f"--property={p}" for p in properties]
            + [f"--setenv={key}={value}" for key, value in environment.items()]
            + command,
            env=self.manager_environment(),
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        return run, log

    def manager_environment(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "XDG_RUNTIME_DIR": str(self.manager.runtime_dir),
            "DBUS_SESSION_BUS_ADDRESS": self.manager.bus_address,
        }

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        shown = self.manager.systemctl("show", unit, "-p", ",".join(properties))
        return dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)

    def stop(self, unit: str) -> None:
        self.manager.systemctl("stop", unit)
        self.manager.systemctl("reset-failed", unit)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    require_private_manager()
    with aws_world(f"rd{os.getpid()}") as world, PrivateSystemdManager() as manager:
        yield Host(world, manager, tmp_path_factory.mktemp("ready"))


# What of the shipped sandbox this host's user manager cannot apply (a container whose
# PID 1 is not systemd: /proc/sys and the kernel log cannot be remounted, and the mount
# namespace hiding /home fails), and /tmp, where the test keeps its state and log. The
# booted machines run the unit unchanged (tests/machine).
NAMESPACES_OFF = [
    f"{key}=no"
    for key in ("ProtectHome", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelLogs")
]


def log_text(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


def test_systemctl_start_returns_once_the_agent_registered(host: Host) -> None:
    service, instance_id = host.new_agent()
    command = host.agent_command("${FLOTILLA_SERVICE}", instance_id, *host.systemd_runtime())
    log = host.install_shipped_unit(command, {**host.environment(), "FLOTILLA_SERVICE": service})
    try:
        started = host.manager.systemctl("start", "flotilla-agent.service")
        registered = host.registered(service, instance_id)  # read at once, before anything else
        assert started.returncode == 0, started.stderr + log_text(log)
        assert registered, "systemctl start returned before the instance was registered"
        shown = host.show("flotilla-agent.service", "ActiveState", "StatusText", "Type")
        assert shown == {
            "ActiveState": "active",
            "StatusText": f"registered {instance_id} in {service}",
            "Type": "notify",
        }
        assert "unit runtime: systemd (--bus-address names a systemd manager)" in log_text(log)
    finally:
        host.stop("flotilla-agent.service")
    assert host.show("flotilla-agent.service", "Result") == {"Result": "success"}  # SIGTERM: 0


def test_systemctl_start_fails_when_the_agent_exits_before_registering(host: Host) -> None:
    service, instance_id = host.new_agent()
    command = host.agent_command(service, instance_id, *host.systemd_runtime())
    log = host.install_shipped_unit(command, host.environment(region=False))
    try:
        began = time.monotonic()
        started = host.manager.systemctl("start", "flotilla-agent.service")
        assert started.returncode != 0  # at its first exit, not after TimeoutStartSec
        assert time.monotonic() - began < 60
        assert not host.registered(service, instance_id)
        assert "error: no AWS region" in log_text(log)
        assert "Traceback" not in log_text(log)
    finally:
        host.stop("flotilla-agent.service")


def test_systemd_run_of_a_notify_agent_returns_once_it_registered(host: Host) -> None:
    service, instance_id = host.new_agent()
    command = host.agent_command(service, instance_id, "--runtime", "process")
    unit = f"agent-{instance_id}.service"
    try:
        run, log = host.systemd_run(unit, command, host.environment())
        registered = host.registered(service, instance_id)
        assert run.returncode == 0, run.stderr + log_text(log)
        assert registered, "systemd-run returned before the instance was registered"
        assert host.show(unit, "ActiveState") == {"ActiveState": "active"}
        # This host runs systemd: the process runtime only because it was named, and said so.
        assert (
            "unit runtime: process (--runtime process, although the host runs systemd)"
            in log_text(log)
        )
    finally:
        host.stop(unit)


def test_without_notify_the_start_would_return_before_registration(host: Host) -> None:
    """The control: with Type=exec (the unit as it was) the same start does not wait, so
    the tests above would see the instance missing if the agent did not notify."""
    service, instance_id = host.new_agent()
    command = host.agent_command(service, instance_id, "--runtime", "process")
    unit = f"agent-{instance_id}.service"
    try:
        run, log = host.systemd_run(unit, command, host.environment(), kind="exec")
        registered = host.registered(service, instance_id)
        assert run.returncode == 0, run.stderr + log_text(log)
        assert not registered
    finally:
        host.stop(unit)


def test_an_agent_without_the_systemd_bindings_fails_its_start_with_one_line(
    host: Host, tmp_path: Path
) -> None:
    # What a venv without the `systemd` extra looks like to the agent: pydbus is not there.
    shadow = tmp_path / "no-bindings"
    shadow.mkdir()
    (shadow / "pydbus.py").write_text("raise ModuleNotFoundError(\"No module named 'pydbus'\")\n")
    service, instance_id = host.new_agent()
    command = host.agent_command(service, instance_id)  # no --runtime: the host decides
    unit = f"agent-{instance_id}.service"
    try:
        run, log = host.systemd_run(
            unit, command, {**host.environment(), "PYTHONPATH": str(shadow)}
        )
        assert run.returncode != 0
        assert not host.registered(service, instance_id)
        (line,) = log_text(log).strip().splitlines()
        assert line.startswith(
            "error: the agent runs units on systemd (the host runs systemd: "
            "/run/systemd/system exists) but cannot import pydbus and PyGObject "
            "(No module named 'pydbus')"
        )
        assert "pip install 'flotilla-deploy[systemd]'" in line
    finally:
        host.stop(unit)


def test_systemd_run_of_a_notify_scheduler_returns_once_it_reached_the_lock_service(
    host: Host,
) -> None:
    owner = f"ready-scheduler-{os.getpid()}"
    command = [FLOTILLA, "scheduler", "--owner", owner, "--lease-seconds", "6"]
    unit = "scheduler-ready.service"
    try:
        run, log = host.systemd_run(unit, command, host.environment())
        holders = [lease.owner for lease in host.world.locks.holders("scheduler")]
        assert run.returncode == 0, run.stderr + log_text(log)
        assert holders == [owner]  # it leads: nobody else competes in this environment
        assert host.show(unit, "StatusText") == {
            "StatusText": "reached the lock service; leading scheduler"
        }
    finally:
        host.stop(unit)
