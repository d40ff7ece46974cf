"""The booted-machine harness itself: systemd is PID 1 with a system bus, a reboot empties
/run and keeps the disk, the fake IMDS and servers on 127.0.0.1 are reachable from inside,
sshd answers on the port asked for, apt works, two machines run side by side, and nothing
(machine or address on lo) is left behind. The fakes are checked with botocore from the host.

Each phase's time is printed (`pytest -s tests/machine` shows them) for the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import botocore.exceptions
import botocore.session
import pytest

from flotilla.cli.demo import cgroups
from tests.machine.conftest import BootMachine
from tests.support.booted_machine import BootedMachine, MachineError, free_tcp_port
from tests.support.fake_imds import IMDS_ADDRESS, FakeImds, fake_imds
from tests.support.signal_recorder import SignalRecorder

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _curl_imds(machine: BootedMachine, path: str) -> str:
    """`path` from the fake IMDS, fetched inside the machine the IMDSv2 way."""
    script = (
        "token=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "
        f"http://{IMDS_ADDRESS}/latest/api/token) && "
        f'curl -sf -H "X-aws-ec2-metadata-token: $token" http://{IMDS_ADDRESS}{path}'
    )
    return machine.sh(script).stdout


def test_pid_1_is_systemd_with_a_system_bus(boot_machine: BootMachine) -> None:
    started = time.monotonic()
    machine = boot_machine("harness-pid1")
    print(f"\ntiming: first boot {time.monotonic() - started:.1f} s (copy + boot)")
    print(f"timing: boot alone {machine.boot_seconds[0]:.2f} s")

    assert machine.run(["readlink", "/proc/1/exe"]).stdout.strip() == "/usr/lib/systemd/systemd"
    assert machine.run(["ps", "-p", "1", "-o", "comm="]).stdout.strip() == "systemd"
    assert "BusScope=system" in machine.run(["busctl", "--system", "status"]).stdout
    assert machine.run(["systemctl", "is-system-running"]).stdout.strip() == "running"
    assert machine.run(["hostname"]).stdout.strip() == "harness-pid1"


def test_a_reboot_empties_run_and_keeps_the_disk(boot_machine: BootMachine) -> None:
    machine = boot_machine("harness-reboot")
    machine.sh("echo gone > /run/marker")
    machine.write_file("/var/lib/flotilla-test/marker", "kept\n")

    started = time.monotonic()
    state = machine.reboot()
    print(f"\ntiming: reboot {time.monotonic() - started:.1f} s (systemctl reboot → running)")

    assert state == "running"
    assert machine.run(["test", "-e", "/run/marker"], check=False).returncode == 1
    assert machine.read_file("/var/lib/flotilla-test/marker") == "kept\n"
    assert len(machine.boot_seconds) == 2
    assert "=== boot 2" in machine.console_log.read_text()
    journal = machine.run(["journalctl", "--list-boots", "--no-pager"]).stdout
    assert len(journal.strip().splitlines()) >= 2, journal


def test_the_fake_imds_answers_inside(boot_machine: BootMachine, imds: FakeImds) -> None:
    machine = boot_machine("harness-imds")

    assert _curl_imds(machine, "/latest/meta-data/instance-id") == "i-0feedc0ffee000001"
    document = json.loads(_curl_imds(machine, "/latest/dynamic/instance-identity/document"))
    assert (document["region"], document["instanceId"]) == ("eu-west-1", "i-0feedc0ffee000001")
    without_token = machine.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", imds.url + "/latest/meta-data/"]
    )
    assert without_token.stdout == "401"

    imds.instance_id = "i-0feedc0ffee000002"
    assert _curl_imds(machine, "/latest/meta-data/instance-id") == "i-0feedc0ffee000002"


def test_a_server_on_the_hosts_loopback_answers_inside(
    boot_machine: BootMachine, signals: SignalRecorder
) -> None:
    machine = boot_machine("harness-loopback")
    form = "Action=SignalResource&StackName=s&LogicalResourceId=Workers&UniqueId=i-1&Status=SUCCESS"

    machine.run(["curl", "-sf", "--data", form, signals.endpoint_url + "/"])

    signal = signals.wait_for(timeout=5)
    assert (signal.stack, signal.logical_id, signal.unique_id, signal.status) == (
        "s",
        "Workers",
        "i-1",
        "SUCCESS",
    )


def test_sshd_answers_on_the_port_asked_for(boot_machine: BootMachine) -> None:
    port = free_tcp_port()
    machine = boot_machine("harness-ssh", sshd_port=port)
    machine.run(["systemctl", "is-active", "ssh.service"])

    scanned = subprocess.run(
        ["ssh-keyscan", "-p", str(port), "-t", "ed25519", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    own_key = machine.read_file("/etc/ssh/ssh_host_ed25519_key.pub").split()[1]
    assert own_key in scanned.stdout


def test_sshd_is_masked_unless_a_port_is_asked_for(boot_machine: BootMachine) -> None:
    machine = boot_machine("harness-nossh")

    state = machine.run(["systemctl", "is-enabled", "ssh.service"], check=False)
    assert state.stdout.strip() == "masked"


def test_two_machines_run_side_by_side(boot_machine: BootMachine) -> None:
    started = time.monotonic()
    worker = boot_machine("harness-worker", sshd_port=free_tcp_port())
    scheduler = boot_machine("harness-scheduler", sshd_port=free_tcp_port())
    print(f"\ntiming: two machines booted in {time.monotonic() - started:.1f} s")

    names = [machine.run(["hostname"]).stdout.strip() for machine in (worker, scheduler)]
    ids = {machine.read_file("/etc/machine-id") for machine in (worker, scheduler)}
    key = "/etc/ssh/ssh_host_ed25519_key.pub"
    keys = {machine.read_file(key) for machine in (worker, scheduler)}
    assert names == ["harness-worker", "harness-scheduler"]
    assert len(ids) == 2, "each machine has its own machine id"
    assert len(keys) == 2, "each machine has its own sshd host keys"
    for machine in (worker, scheduler):
        assert machine.run(["systemctl", "is-system-running"]).stdout.strip() == "running"

    # Each in a cgroup tree of its own, so their same-named units never share a cgroup
    # (cli/demo/cgroups.py): a unit stopped in one leaves the other's running.
    trees = {Path(f"/proc/{m.leader_pid}/cgroup").read_text() for m in (worker, scheduler)}
    assert len(trees) == 2, trees
    twin = ["systemd-run", "--unit", "twin", "--property", "TimeoutStopSec=5", "sleep", "600"]
    for machine in (worker, scheduler):
        machine.run(twin)
    pid = ["systemctl", "show", "twin", "-p", "MainPID", "--value"]
    before = scheduler.run(pid).stdout.strip()
    worker.run(["systemctl", "stop", "twin"], timeout=30)
    assert worker.run(["systemctl", "is-active", "twin"], check=False).stdout.strip() != "active"
    assert scheduler.run(["systemctl", "is-active", "twin"]).stdout.strip() == "active"
    assert scheduler.run(pid).stdout.strip() == before != "0"


def test_apt_installs_packages_inside(boot_machine: BootMachine) -> None:
    machine = boot_machine("harness-apt")
    assert machine.run(["python3", "-c", "import venv, ensurepip"], check=False).returncode != 0

    started = time.monotonic()
    machine.sh("apt-get update -q", timeout=300)
    machine.sh(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv",
        timeout=600,
    )
    print(f"\ntiming: apt-get update + install python3-venv {time.monotonic() - started:.1f} s")

    machine.run(["python3", "-m", "venv", "/tmp/venv"], timeout=120)
    assert machine.run(["/tmp/venv/bin/python", "-c", "print(1)"]).stdout == "1\n"


def test_a_machine_stopped_leaves_no_process(base_root: object) -> None:
    machine = BootedMachine("harness-stop")
    try:
        machine.boot()
        leader = machine.run(["cat", "/proc/1/stat"]).stdout  # the machine's view of PID 1
        assert leader.startswith("1 (systemd)")
        host_pid = machine.leader_pid
    finally:
        machine.remove()
    assert host_pid is not None
    assert not os.path.exists(f"/proc/{host_pid}")
    assert not machine.run_dir.exists()
    # Nor its cgroups (one per mounted hierarchy, named after the machine's run).
    named = f"flotilla-machine-{machine.run_dir.name.removeprefix('run-')}-"
    left = [
        group
        for hierarchy in cgroups.hierarchies()
        for group in (hierarchy.mount_point / hierarchy.current).glob(f"{named}*")
    ]
    assert left == []
    with pytest.raises(MachineError, match="not started"):
        machine.run(["true"])


def _loopback_addresses() -> str:
    shown = ["ip", "-4", "addr", "show", "dev", "lo"]
    return subprocess.run(shown, capture_output=True, text=True, check=True).stdout


def _fail_while_serving_imds() -> None:
    with fake_imds():
        assert IMDS_ADDRESS in _loopback_addresses()
        raise RuntimeError("the test failed")


def test_the_fake_imds_leaves_no_address_on_lo() -> None:
    with pytest.raises(RuntimeError, match="the test failed"):
        _fail_while_serving_imds()

    assert IMDS_ADDRESS not in _loopback_addresses()


def test_botocore_on_the_host_takes_the_fakes_credentials_and_region(
    imds: FakeImds, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", raising=False)
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)

    credentials = botocore.session.get_session().get_credentials()

    assert credentials is not None
    assert credentials.method == "iam-role"
    frozen = credentials.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (
        imds.access_key_id,
        imds.secret_access_key,
        imds.session_token,
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(imds.url + "/latest/meta-data/instance-id", timeout=5)  # noqa: S310
    assert refused.value.code == 401


# botocore's pooled connection to the recorder is collected after the test, whichever way
# it is closed (a ResourceWarning from urllib3's pool, not from the code under test).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_botocore_signals_reach_the_recorder(
    signals: SignalRecorder, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDFORMATION", signals.endpoint_url)
    client = boto3.session.Session().client("cloudformation", region_name="eu-west-1")
    request.addfinalizer(client.close)  # its connection pool, or a ResourceWarning

    client.signal_resource(
        StackName="flotilla-web", LogicalResourceId="Workers", UniqueId="i-9", Status="FAILURE"
    )
    with pytest.raises(botocore.exceptions.ClientError, match="SignalResource only"):
        client.describe_stacks()

    [signal] = signals.signals
    assert signal[1:] == ("flotilla-web", "Workers", "i-9", "FAILURE")
    assert abs(signal.time - time.time()) < 60
