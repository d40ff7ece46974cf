"""A worker and a scheduler booted from the templates' own user data, on real systemd.

The path a user takes, end to end, on machines where systemd is PID 1 with its own
system bus: `flotilla init` and `service provision` (against a moto server) publish the
wheel built from this checkout to the environment's artifact bucket; each machine runs
the UserData that CloudFormation would hand it, rendered from the template with the
stack's own parameters; the bootstrap installs Python from apt, fetches the wheel with
the instance role (a fake IMDS on 169.254.169.254), checks its sha256 and starts the
service. Then: the agent registers and only then signals the stack; the scheduler
machine leads and assigns; a revision with a KMS-sealed environment is deployed on the
machine's system manager and serves HTTP; the machine is rebooted in the middle of a
deploy and after it; sshd lets in exactly the users `flotilla keys` names.

The environment spans two regions (`init --region A --region B`), and so does the
service: each region has its stack, tables and key, the revisions are sealed in each,
and users are written to both. The machines are the home region's (moto's `Fn::GetAZs`
gives us-east-1's zones in every region, so the other region's scheduler group is put
in a subnet of its own default VPC, and its instances are moto's alone).

The only thing the machines are told that a real instance is not: where AWS is
(`/etc/default/flotilla`, the file machine-local settings such as a proxy go in).
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

from flotilla.engine.records import Instance
from tests.support.agents import AwsWorld
from tests.support.aws import REGION, moto_server
from tests.support.aws_cli import Cli
from tests.support.booted_machine import BootedMachine, MachineError, base_image, free_tcp_port
from tests.support.fake_imds import FakeImds, fake_imds
from tests.support.signal_recorder import SignalRecorder, signal_recorder
from tests.support.user_data import render_user_data
from tests.support.wheels import build_checkout_wheel

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ENV = "boot"
SERVICE = "api"
OTHER_REGION = "eu-west-1"  # the environment's second region (REGION is its home)
INSTANCE = "i-0b007ed0000000001"
WEB_PORT = 18080
USER_DATA = "/var/lib/cloud/instance/user-data.txt"
USER_DATA_TIMEOUT = 1200.0  # apt and pip from the registries: minutes on a slow day
_user_data_runs = itertools.count(1)


def web_revision(folder: Path, greeting: str, start_delay: int = 0) -> Path:
    """A unit that serves its sealed GREETING over HTTP; `start_delay` keeps it starting."""
    folder.mkdir()
    delay = f"ExecStartPre=/bin/sleep {start_delay}\n" if start_delay else ""
    (folder / "web.service").write_text(
        "[Service]\nType=exec\n"
        + delay
        + f'ExecStart=/bin/sh -c \'mkdir -p /run/{greeting} && printf %%s "$$GREETING" >'
        f" /run/{greeting}/index.html && exec python3 -m http.server {WEB_PORT}"
        f" --bind 127.0.0.1 --directory /run/{greeting}'\n"
    )
    (folder / "web.env").write_text(f"GREETING={greeting}\n")
    return folder


@dataclass
class Fleet:
    cli: Cli
    world: AwsWorld
    worker: BootedMachine
    scheduler: BootedMachine
    imds: FakeImds
    signals: SignalRecorder
    started: float  # time.time() when the machines were started
    user_data: dict[str, str]  # machine name -> the rendered script
    ssh_port: int
    folder: Path
    deployed: list[str] = field(default_factory=list)  # labels, in the order deployed

    def instance(self) -> Instance | None:
        return next((i for i in self.world.store.list_instances(SERVICE) if i.id == INSTANCE), None)

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: not within {timeout:.0f} s\n--- worker's agent ---\n"
                    + self.worker.journal("flotilla-agent", lines=40)
                    + "\n--- scheduler ---\n"
                    + self.scheduler.journal("flotilla-scheduler", lines=20)
                )
            time.sleep(1)

    def served(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{WEB_PORT}/", timeout=3) as page:
                return str(page.read().decode())
        except OSError:
            return ""

    def deploy(self, folder: Path) -> str:
        """Add the revision, labelled as its folder, and move every instance to it (the
        previous one to weight 0); its id in the home region, where the machines are.
        Weights name labels: a revision has an id per region (each seals with its key)."""
        label = folder.name
        revision = self.cli.ok("revision", "add", SERVICE, str(folder), "--label", label)
        previous = [f"{self.deployed[-1]}=0"] if self.deployed else []
        self.cli.ok("weights", SERVICE, *previous, f"{label}=100")
        self.deployed.append(label)
        return revision.split()[-1]


def stack_values(cli: Cli, stack: str) -> dict[str, str]:
    """What CloudFormation substitutes in the stack's templates: its parameters and the
    pseudo parameters."""
    return {
        **cli.parameters(stack),
        "AWS::StackName": stack,
        "AWS::Region": REGION,
        "AWS::Partition": "aws",
    }


def stack_output(cli: Cli, stack: str, key: str, region: str = REGION) -> str:
    cloudformation = boto3.client("cloudformation", region_name=region, endpoint_url=cli.endpoint)
    (described,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    return next(o["OutputValue"] for o in described["Outputs"] if o["OutputKey"] == key)


def default_subnet(endpoint: str, region: str) -> str:
    """A subnet of the region's default VPC (moto makes one in every region)."""
    ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint)
    found = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
    return str(found["Subnets"][0]["SubnetId"])


def run_user_data(machine: BootedMachine, script: str) -> subprocess.CompletedProcess[str]:
    """As cloud-init does: the script as a service of the machine's system manager."""
    machine.write_file(USER_DATA, script, mode=0o700)
    unit = f"user-data-{next(_user_data_runs)}"  # never a name an earlier run still holds
    return machine.run(
        ["systemd-run", "--unit", unit, "--collect", "--wait", "--pipe", USER_DATA],
        timeout=USER_DATA_TIMEOUT,
        check=False,
    )


SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")


def trust_what_the_host_trusts(machine: BootedMachine) -> None:
    """The machines share the host's network, and so its way to the package registries,
    which may pass through a proxy with its own certificate authority (as here): they
    trust the authorities the host added, and pip is told to use the system's bundle, as
    an image for such a network would be set up."""
    for authority in sorted(HOST_EXTRA_CAS.glob("*.crt")):
        machine.write_file(f"{HOST_EXTRA_CAS}/{authority.name}", authority.read_text())
    machine.run(["update-ca-certificates"], timeout=120)


def bootstrap_lines(machine: BootedMachine) -> list[str]:
    done = machine.run(["journalctl", "-t", "flotilla-bootstrap", "-o", "cat", "--no-pager"])
    return done.stdout.strip().splitlines()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("fleet")
    wheel = build_checkout_wheel(tmp_path_factory.mktemp("wheel"))
    base_image()
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(moto_server())
        imds = stack.enter_context(fake_imds(instance_id=INSTANCE, region=REGION))
        signals = stack.enter_context(signal_recorder())
        cli = Cli(endpoint, ENV)
        both = ("--region", REGION, "--region", OTHER_REGION)
        cli.ok("init", "--wheel", str(wheel), "--scheduler-count", "0", *both,
               with_region=False, timeout=600)  # fmt: skip
        # Each region's schedulers (init with one region keeps the regions the stack names).
        cli.ok("init", "--wheel", str(wheel), "--scheduler-count", "1", timeout=600)
        cli.ok("init", "--wheel", str(wheel), "--scheduler-count", "1", "--region", OTHER_REGION,
               "--subnets", default_subnet(endpoint, OTHER_REGION), with_region=False,
               timeout=600)  # fmt: skip
        for region in (REGION, OTHER_REGION):
            spans = stack_output(cli, f"flotilla-{ENV}", "EnvironmentRegions", region)
            assert spans == f"{REGION},{OTHER_REGION}"
        cli.ok("service", "create", SERVICE, *both, with_region=False)
        cli.ok("service", "provision", SERVICE, "--wheel", str(wheel), "--min", "1", "--max", "1")
        exports = {
            e["Name"]: e["Value"] for e in cli.client("cloudformation").list_exports()["Exports"]
        }
        environment_stack = f"flotilla-{ENV}"
        scripts = {
            "scheduler": render_user_data(
                "environment.yaml",
                "SchedulerLaunchTemplate",
                {
                    **stack_values(cli, environment_stack),
                    "ArtifactBucket": cli.bucket(),
                    # A Ref of the stack's topic is its ARN, which the stack gives out.
                    "EventsTopic": stack_output(cli, environment_stack, "EventsTopicArn"),
                },
            ),
            "worker": render_user_data(
                "service.yaml",
                "WorkerLaunchTemplate",
                stack_values(cli, f"{environment_stack}-{SERVICE}"),
                exports,
            ),
        }
        ssh_port = free_tcp_port()
        worker = BootedMachine("worker", sshd_port=ssh_port)
        scheduler = BootedMachine("scheduler")
        for machine in (worker, scheduler):
            stack.callback(machine.remove)  # stops it first
        started = time.time()
        for machine in (worker, scheduler):
            machine.start()
        for machine in (worker, scheduler):
            machine.wait_until_booted()
            trust_what_the_host_trusts(machine)
            machine.write_file(
                "/etc/default/flotilla",
                f"AWS_ENDPOINT_URL={endpoint}\n"
                f"AWS_ENDPOINT_URL_CLOUDFORMATION={signals.endpoint_url}\n"
                f"PIP_CERT={SYSTEM_CA_BUNDLE}\n",
            )
        fleet = Fleet(
            cli,
            AwsWorld(endpoint, ENV),
            worker,
            scheduler,
            imds,
            signals,
            started,
            scripts,
            ssh_port,
            folder,
        )
        yield fleet


@pytest.fixture(scope="module")
def booted(fleet: Fleet) -> Fleet:
    """Both machines' user data run to the end, at the same time."""
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def bootstrap(machine: BootedMachine) -> None:
        results[machine.name] = run_user_data(machine, fleet.user_data[machine.name])

    threads = [
        threading.Thread(target=bootstrap, args=(m,)) for m in (fleet.worker, fleet.scheduler)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, result in results.items():
        assert result.returncode == 0, f"{name}'s user data failed:\n{result.stderr[-4000:]}"
    return fleet


def test_the_agent_registers_on_the_system_manager_then_signals_the_stack(booted: Fleet) -> None:
    instance = booted.instance()
    assert instance is not None, "the agent never registered"
    signal = booted.signals.wait_for(lambda s: s.stack == f"flotilla-{ENV}-{SERVICE}")
    assert (signal.logical_id, signal.unique_id, signal.status) == (
        "WorkerGroup",
        INSTANCE,
        "SUCCESS",
    )
    registered = instance.registered_at.timestamp()
    assert signal.time >= registered, "the stack was signalled before the agent registered"
    print(
        f"\nfigure: boot to registered agent {registered - booted.started:.1f} s "
        f"(boot {booted.worker.boot_seconds[0]:.1f} s); signal "
        f"{signal.time - registered:.2f} s after registering"
    )
    active = booted.worker.run(["systemctl", "is-active", "flotilla-agent"], check=False)
    assert active.stdout.strip() == "active"
    assert "unit runtime: systemd" in booted.worker.journal("flotilla-agent")
    assert bootstrap_lines(booted.worker)[-1].startswith("the agent is up and registered")
    # The metadata firewall is installed and enabled, and skipped here: this machine shares
    # the host's network and has no CAP_NET_ADMIN (tests/security/test_imds_firewall.py
    # applies the same rules in a network namespace of their own).
    firewall = "flotilla-imds-firewall"
    enabled = booted.worker.run(["systemctl", "is-enabled", firewall], check=False)
    assert enabled.stdout.strip() == "enabled"
    shown = booted.worker.run(["systemctl", "show", firewall, "-p", "ConditionResult"])
    assert shown.stdout.strip() == "ConditionResult=no"


def test_the_scheduler_machine_signals_and_leads(booted: Fleet) -> None:
    signal = booted.signals.wait_for(lambda s: s.stack == f"flotilla-{ENV}")
    assert (signal.logical_id, signal.status) == ("SchedulerGroup", "SUCCESS")
    active = booted.scheduler.run(["systemctl", "is-active", "flotilla-scheduler"], check=False)
    assert active.stdout.strip() == "active"


# The bootstrap's failures, on the scheduler machine, before the deploys and reboots: each
# leaves the running scheduler alone, which the deploys below then rely on.


def test_a_wheel_with_another_hash_is_refused_in_one_line_and_signals_failure(
    booted: Fleet,
) -> None:
    good = booted.cli.parameters(f"flotilla-{ENV}")["FlotillaWheelSha256"]
    script = booted.user_data["scheduler"].replace(
        f"wheel_sha256='{good}'", f"wheel_sha256='{'0' * 64}'"
    )
    assert script != booted.user_data["scheduler"]
    before = len(booted.signals.signals)
    last = failing_run(booted, script)
    assert last.startswith("failed: flotilla_deploy-"), last
    assert f"has sha256 {good}, the stack expects {'0' * 64}" in last
    failure = booted.signals.wait_for(lambda s: s.status == "FAILURE")
    assert booted.signals.signals.index(failure) >= before
    # The running scheduler was left alone.
    active = booted.scheduler.run(["systemctl", "is-active", "flotilla-scheduler"], check=False)
    assert active.stdout.strip() == "active"


def state_of(machine: BootedMachine) -> str:
    """What a failure message needs to be explained from CI's output alone."""
    asked = {
        "system": ["systemctl", "is-system-running"],
        "scheduler": ["systemctl", "show", "flotilla-scheduler", "-p", "ActiveState,NRestarts"],
        "failed units": ["systemctl", "--failed", "--no-legend", "--plain"],
        "journal": ["journalctl", "--no-pager", "-n", "40", "-o", "short-monotonic"],
    }
    answers = []
    for what, command in asked.items():
        try:
            done = machine.run(command, timeout=30, check=False)
        except MachineError as exc:  # no answer in time, or the machine is gone
            answers.append(f"{what}: {exc}")
        else:
            answers.append(f"{what}: {done.stdout}{done.stderr}")
    return "\n".join(answers)


def failing_run(booted: Fleet, script: str) -> str:
    """Run a variant of the scheduler's user data that must fail: its journal gets one
    `failed:` line, last (a multi-line message would be several entries), and the stack
    a FAILURE signal. Returns that line."""
    assert script != booted.user_data["scheduler"], "the variant changed nothing"
    failures = sum(s.status == "FAILURE" for s in booted.signals.signals)
    logged_before = len(bootstrap_lines(booted.scheduler))
    result = run_user_data(booted.scheduler, script)
    ran = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode != 0, ran
    # journald takes the line from logger's datagram in its own time: wait for it.
    logged: list[str] = []
    deadline = time.monotonic() + 30
    while not logged and time.monotonic() < deadline:
        logged = bootstrap_lines(booted.scheduler)[logged_before:]
        time.sleep(0 if logged else 0.2)
    assert logged, (
        f"the failing user data logged nothing; it ran:\n{ran}\n{state_of(booted.scheduler)}"
    )
    assert [line for line in logged if line.startswith("failed:")] == logged[-1:], logged
    booted.signals.wait_for(
        lambda s: sum(x.status == "FAILURE" for x in booted.signals.signals) > failures
    )
    return logged[-1]


def test_an_unreachable_bucket_is_one_line_and_a_failure_signal(booted: Fleet) -> None:
    script = booted.user_data["scheduler"].replace(booted.cli.bucket(), "no-such-bucket-here")
    line = failing_run(booted, script)
    assert line.startswith("failed: cannot fetch wheels/"), line
    assert line.endswith("from no-such-bucket-here: AWS answered 404 NoSuchBucket"), line


def test_a_failed_package_install_is_one_line_and_a_failure_signal(booted: Fleet) -> None:
    """apt fails before Flotilla's virtualenv exists: the stack hears it all the same."""
    script = booted.user_data["scheduler"].replace(
        " python3-pydbus ca-certificates", " python3-pydbus flotilla-no-such-package"
    )
    line = failing_run(booted, script)
    assert line.startswith("failed: installing Python, python3-gi and python3-pydbus"), line


def test_a_virtualenv_without_the_systemd_bindings_fails_in_one_line(booted: Fleet) -> None:
    """A Python that cannot reach the distribution's pydbus and PyGObject: the bootstrap
    stops there (in another virtualenv: the running scheduler is left alone)."""
    script = (
        booted.user_data["scheduler"]
        .replace("venv=/opt/flotilla\n", "venv=/opt/flotilla-without-bindings\n")
        .replace("venv_options=--system-site-packages", 'venv_options=""')
    )
    line = failing_run(booted, script)
    # pip cannot build PyGObject there (no compiler, no headers: nothing asked for them).
    assert line.startswith("failed: installing /opt/flotilla-without-bindings/wheels/"), line
    assert " with its systemd bindings (exit 1, line " in line, line
    active = booted.scheduler.run(["systemctl", "is-active", "flotilla-scheduler"], check=False)
    assert active.stdout.strip() == "active"


def test_a_sealed_revision_is_deployed_on_the_system_manager_and_serves(booted: Fleet) -> None:
    revision = booted.deploy(web_revision(booted.folder / "v1", "hello-from-v1"))
    booted.wait(
        lambda: getattr(booted.instance(), "current_revision", None) == revision,
        300,
        "the scheduler assigned and the agent deployed v1",
    )
    booted.wait(lambda: booted.served() == "hello-from-v1", 60, "v1 serves its greeting")
    units = booted.worker.run(["ls", "/run/systemd/system"]).stdout.split()
    assert any(name.startswith("flotilla-") for name in units), units
    # It runs in its default sandbox (engine/hardening.py), all of it, on a system manager.
    [web] = [n for n in units if n.startswith("flotilla-web-") and n.endswith(".service")]
    sandbox = "NoNewPrivileges,PrivateTmp,ProtectSystem,ProtectKernelTunables,ProtectKernelLogs"
    shown = booted.worker.run(["systemctl", "show", web, "-p", sandbox]).stdout.split()
    assert sorted(shown) == [
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectKernelLogs=yes",
        "ProtectKernelTunables=yes",
        "ProtectSystem=full",
    ]
    env_files = booted.worker.run(["ls", "-l", "/run/flotilla/env"]).stdout
    assert "-rw-------" in env_files
    assert "hello-from-v1" not in booted.worker.journal("flotilla-agent")


def test_a_reboot_in_the_middle_of_a_deploy_resumes_it(booted: Fleet) -> None:
    revision = booted.deploy(web_revision(booted.folder / "v2", "hello-from-v2", start_delay=8))

    def starting() -> bool:
        deploys = booted.world.store.list_instance_deploys("api", INSTANCE)
        return any(d.to_revision == revision and d.state == "starting" for d in deploys)

    booted.wait(starting, 300, "the v2 deploy reached its starting state")
    (interrupted,) = [
        d
        for d in booted.world.store.list_instance_deploys("api", INSTANCE)
        if d.to_revision == revision
    ]
    booted.worker.reboot()
    booted.wait(
        lambda: getattr(booted.instance(), "current_revision", None) == revision,
        300,
        "the interrupted v2 deploy finished after the reboot",
    )
    booted.wait(lambda: booted.served() == "hello-from-v2", 60, "v2 serves after the reboot")
    deploys = [
        d
        for d in booted.world.store.list_instance_deploys("api", INSTANCE)
        if d.to_revision == revision
    ]
    assert [d.id for d in deploys] == [interrupted.id], "resumed, not started again"
    assert deploys[0].finished


def test_after_a_reboot_the_units_come_back_with_their_environment(booted: Fleet) -> None:
    booted.worker.reboot()
    booted.wait(lambda: booted.served() == "hello-from-v2", 180, "v2 serves after a reboot")


def _ssh(fleet: Fleet, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh",
            *("-p", str(fleet.ssh_port), "-i", str(key)),
            *("-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"),
            *("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"),
            *("-o", "ConnectTimeout=10"),
            "ops@127.0.0.1",
            "echo logged-in-as-$(id -un)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sshd_lets_in_exactly_the_users_flotilla_keys_names(booted: Fleet) -> None:
    keys = booted.folder / "keys"
    keys.mkdir()
    booted.cli.ok("service", "create", "web")  # access is granted to services that exist
    for name, options in {
        "alice": ["--service", SERVICE],
        "bob": ["--service", "web"],
        "carol": ["--service", SERVICE],
    }.items():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True
        )
        booted.cli.ok("user", "add", name, "--key", str(keys / f"{name}.pub"), *options)
    booted.cli.ok("user", "deactivate", "carol")
    # Written to both regions: the other region's instances would let alice in too.
    other = booted.cli.ok("keys", "--service", SERVICE, "--region", OTHER_REGION, with_region=False)
    assert other.splitlines() == [(keys / "alice.pub").read_text().strip()]
    allowed = _ssh(booted, keys / "alice")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == "logged-in-as-ops"
    # The agent answered sshd through its socket (systemd's, root and flotilla-keys only).
    socket_mode = booted.worker.run(["stat", "-c", "%F %U:%G %a", "/run/flotilla-keys.sock"])
    assert socket_mode.stdout.split() == ["socket", "root:flotilla-keys", "660"]
    booted.wait(
        lambda: (
            "answered sshd: 1 key line(s) for the shared login on api"
            in booted.worker.journal("flotilla-agent")
        ),
        30,
        "the agent's log of its answer to sshd",
    )
    for refused in ("bob", "carol"):  # another service's user; a deactivated one
        denied = _ssh(booted, keys / refused)
        assert denied.returncode == 255, (refused, denied.stdout, denied.stderr)
        assert "Permission denied" in denied.stderr
    # Every login is a live read: a user removed a moment ago is refused at once.
    booted.cli.ok("user", "remove", "alice")
    removed = _ssh(booted, keys / "alice")
    assert removed.returncode == 255, (removed.stdout, removed.stderr)
