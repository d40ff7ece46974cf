"""`flotilla agent`: the daemon on every instance (run it as a systemd service itself).

The command reads its options, chooses the unit runtime (`cli.agent_runtime`), builds the
adapters in the composition root (`cli.wiring`) and has the agent assembled where every
agent is (`cli.agent_assembly.build_agent`); then it runs it until SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click

from flotilla.adapters.process_identity import current_identity
from flotilla.adapters.sd_notify import notify_ready
from flotilla.adapters.state_dir import check_state_dir
from flotilla.adapters.systemd import missing_bindings
from flotilla.cli import DISTRIBUTION
from flotilla.cli.agent_assembly import adapters_from, build_agent
from flotilla.cli.agent_runtime import PROCESS, SYSTEMD, choose_runtime, host_runs_systemd
from flotilla.cli.daemon import at_start, daemon_options, seconds_option, start_daemon
from flotilla.cli.keys_socket import KeysServer, bound_listener, systemd_listener
from flotilla.cli.wiring import unit_runtime
from flotilla.engine.deploy.agent import AgentSettings
from flotilla.engine.deploy.runner import FaultHook, RunnerSettings
from flotilla.engine.deploy.steps import StepSettings
from flotilla.engine.errors import ValidationError
from flotilla.engine.liveness import DEFAULT_AGENT_LEASE, DEFAULT_INSTANCE_TTL
from flotilla.engine.operations.names import find_service
from flotilla.engine.records import Instance
from flotilla.engine.validation import service_name

FAULT_VARIABLE = "FLOTILLA_FAULT_KILL_AT"
log = logging.getLogger(__name__)


@click.command(short_help="Run the agent on an instance (a daemon).")
@click.option("--service", "service", required=True, help="The service this instance is born into.")
@click.option("--instance-id", help="This instance's id [default: EC2 instance metadata, IMDSv2]")
@click.option(
    "--runtime",
    type=click.Choice([SYSTEMD, PROCESS]),
    help="Where units run [default: systemd when the host runs systemd, else process]",
)
@click.option(
    "--bus-address", help="D-Bus address of a systemd user manager (development; implies systemd)"
)
@click.option("--unit-dir", type=click.Path(path_type=Path), help="Where unit files are written")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=Path("/run/flotilla"),
    show_default=True,
    help="Runtime state: env files (0600, on tmpfs), process runtime pid files",
)
@click.option(
    "--allow-disk-state-dir",
    is_flag=True,
    envvar="FLOTILLA_ALLOW_DISK_STATE_DIR",
    help="Accept a --state-dir that is not on a tmpfs (development and tests only: decrypted "
    "environments then reach the disk); refused otherwise",
)
@click.option(
    "--kms-key-id",
    envvar="FLOTILLA_KMS_KEY_ID",
    help="KMS key of the environment [default: alias/flotilla-ENV]",
)
@click.option(
    "--keys-socket",
    envvar="FLOTILLA_KEYS_SOCKET_LISTEN",
    type=click.Path(path_type=Path),
    help="Answer `flotilla keys` (sshd, at every login) on this Unix socket, bound here "
    "[default: the socket systemd hands over (flotilla-keys.socket), else none]",
)
@seconds_option(
    "--poll-interval",
    60.0,
    0.1,
    3600,
    "Seconds between looks at the assignment when no wake-up comes (the scheduler rings the"
    " agent at once; without a wake-up queue the agent looks every 5 s)",
)
@seconds_option("--lease-seconds", 120.0, 3, 3600, "Deploy lock lease, renewed while a deploy runs")
@seconds_option(
    "--agent-lease-seconds",
    DEFAULT_AGENT_LEASE.total_seconds(),
    1,
    86400,
    "This agent's hold on its instance; renewing it, every third of it, is the heartbeat",
)
@daemon_options
def agent(**options: Any) -> None:
    """Run the agent: resume any interrupted deploy, then deploy each new assignment.

    Refuses a SERVICE that does not exist. At start it retries AWS with back-off for
    about a minute and a half, logging each attempt. Logs one JSON object per line on
    standard error. Under systemd (`Type=notify`) it
    reports READY once the instance is registered. SIGTERM finishes the current step,
    checkpoints it, and exits 0; the deploy resumes at the next start.
    """
    service = service_name(options["service"])
    if options["agent_lease_seconds"] <= options["poll_interval"] * 1.5:
        raise ValidationError("--agent-lease-seconds must be well above --poll-interval (x1.5)")
    # Before anything starts: a runtime that cannot work is one line and a non-zero exit.
    choice = choose_runtime(
        options["runtime"],
        bus_address_given=options["bus_address"] is not None,
        host_runs_systemd=host_runs_systemd(),
        missing_bindings=missing_bindings(),
    )
    wiring, stop = start_daemon("flotilla-agent", options)
    # A mistyped --service must not register an instance into nothing and idle for ever.
    at_start(
        f"finding service {service}",
        lambda: find_service(wiring.store, service, wiring.settings.environment),
        stop,
    )
    listener = systemd_listener() or (
        bound_listener(options["keys_socket"]) if options["keys_socket"] else None
    )
    if listener is not None:
        KeysServer(listener, wiring.users).start()
        log.info("answering sshd's questions about keys on %s", listener.getsockname())
    # Before anything is decrypted: env files on a disk would outlive the machine.
    check_state_dir(options["state_dir"], allow_disk=options["allow_disk_state_dir"])
    log.info("%s", choice.describe())
    instance_id = options["instance_id"] or _instance_id_from_metadata()
    runtime = unit_runtime(
        choice,
        state_dir=options["state_dir"],
        bus_address=options["bus_address"],
        unit_dir=options["unit_dir"],
    )
    adapters = at_start(
        "finding the events queue",
        lambda: adapters_from(wiring, runtime, kms_key_id=options["kms_key_id"], stop=stop),
        stop,
    )
    agent_lease = timedelta(seconds=options["agent_lease_seconds"])
    build_agent(
        AgentSettings(
            instance_id=instance_id,
            service=service,
            agent_version=version(DISTRIBUTION),
            owner=current_identity(),
            poll_interval=timedelta(seconds=options["poll_interval"]),
            agent_lease=agent_lease,
            # Above the heartbeat however long the hold (the scheduler's TTL is its own).
            instance_ttl=max(DEFAULT_INSTANCE_TTL, agent_lease),
        ),
        adapters,
        stop=stop,
        runner_settings=RunnerSettings(
            steps=StepSettings(
                lease=timedelta(seconds=options["lease_seconds"]),
                max_poll_seconds=min(5.0, options["agent_lease_seconds"] / 4),
            )
        ),
        fault=_fault_from_environment(),
        wait_for_wakeup=stop.wait,
        on_registered=_tell_systemd_registered,
    ).run()


def _tell_systemd_registered(instance: Instance) -> None:
    # A no-op unless systemd started the agent as a Type=notify service.
    notify_ready(f"registered {instance.id} in {instance.service}")


def _instance_id_from_metadata() -> str:
    """IMDSv2: a session token first, then the instance id."""
    import urllib.request

    base = "http://169.254.169.254/latest"
    try:
        token_request = urllib.request.Request(  # noqa: S310 -- a fixed http URL
            f"{base}/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        with urllib.request.urlopen(token_request, timeout=2) as answer:  # noqa: S310 -- fixed URL
            token = answer.read().decode()
        id_request = urllib.request.Request(  # noqa: S310 -- a fixed http URL
            f"{base}/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token}
        )
        with urllib.request.urlopen(id_request, timeout=2) as answer:  # noqa: S310 -- fixed URL
            return str(answer.read().decode())
    except OSError as exc:
        raise ValidationError(
            "cannot read the instance id from EC2 instance metadata; off EC2, pass --instance-id"
        ) from exc


def _fault_from_environment() -> FaultHook:
    """Crash tests set FLOTILLA_FAULT_KILL_AT=STATE:POINT to SIGKILL the agent right there."""
    target = os.environ.get(FAULT_VARIABLE, "")
    if not target:
        return lambda _point, _state: None
    state, _, point = target.partition(":")

    def kill_at(at_point: str, at_state: str) -> None:
        if (at_state, at_point) == (state, point or "before-step"):
            os.kill(os.getpid(), signal.SIGKILL)

    return kill_at
