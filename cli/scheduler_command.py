"""`flotilla scheduler`: the leader-elected service that turns weights into assignments.

Run several (one per availability zone, say): one leads, the others stand by and take
over within about a third of the lease after the leader dies or stops.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta
from typing import Any

import click

from flotilla.adapters.sd_notify import notify_ready
from flotilla.cli import settings as setting_rules
from flotilla.cli.daemon import at_start, daemon_options, seconds_option, start_daemon
from flotilla.engine.errors import ValidationError
from flotilla.engine.liveness import DEFAULT_INSTANCE_TTL
from flotilla.engine.validation import whole_number
from flotilla.scheduler.gates import GateReaders
from flotilla.scheduler.service import Scheduler, SchedulerSettings

log = logging.getLogger(__name__)


@click.command(short_help="Run the scheduler (a daemon; one leads).")
@seconds_option(
    "--interval",
    15.0,
    1,
    3600,
    "Seconds between full passes over every service (events trigger passes in between)",
)
@seconds_option(
    "--lease-seconds",
    15.0,
    3,
    3600,
    "Leader lease; a standby takes over at most this long plus a third after a crash",
)
@seconds_option(
    "--instance-ttl",
    DEFAULT_INSTANCE_TTL.total_seconds(),
    10,
    86400,
    "Seconds without a heartbeat after which an instance counts as dead",
)
@click.option(
    "--shard",
    default="0/1",
    show_default=True,
    help="SEGMENT/SEGMENTS: lead only this share of the services (each shard elects its own)",
)
@click.option("--owner", help="This scheduler's name in the lease [default: host/pid/time]")
@click.option(
    "--events-topic",
    envvar="FLOTILLA_EVENTS_TOPIC",
    metavar="ARN",
    help="The SNS topic to publish rollout events to: the environment stack's output "
    "EventsTopicArn (the stack's schedulers are given it) [default: FLOTILLA_EVENTS_TOPIC; "
    "unset: events are not published]",
)
@daemon_options
def scheduler(**options: Any) -> None:
    """Run the scheduler: lead or stand by; pass on a timer and at once on SQS events.

    At start it retries AWS with back-off for about a minute and a half, logging each
    attempt. Logs one JSON object per line on standard error. Under systemd (`Type=notify`) it
    reports READY after its first leadership attempt reached the lock service. SIGTERM
    (or Ctrl-C) releases the leader lease so that a standby takes over at once, and
    exits 0.
    """
    segment, segments = parse_shard(options["shard"])
    events_topic = options["events_topic"] or None
    if events_topic is not None:
        source = click.get_current_context().get_parameter_source("events_topic")
        where = (
            "FLOTILLA_EVENTS_TOPIC"
            if source is click.core.ParameterSource.ENVIRONMENT
            else "--events-topic"
        )
        setting_rules.topic_arn(events_topic, where)
    interval = timedelta(seconds=options["interval"])
    lease = timedelta(seconds=options["lease_seconds"])
    wiring, stop = start_daemon("flotilla-scheduler", options)
    wiring.events_topic = events_topic
    if events_topic is None:
        log.warning(
            "no events topic (--events-topic, FLOTILLA_EVENTS_TOPIC): rollout events are "
            "not published"
        )

    def wait(seconds: float) -> None:
        stop.wait(seconds)  # a SIGTERM ends any wait at once

    owner = options["owner"] or f"{socket.gethostname()}/{os.getpid()}/{time.time_ns()}"
    settings = SchedulerSettings(
        owner=owner,
        segment=segment,
        segments=segments,
        interval=interval,
        lease=lease,
        instance_ttl=timedelta(seconds=options["instance_ttl"]),
    )

    def tell_systemd_ready(leading: bool) -> None:
        # A no-op unless systemd started the scheduler as a Type=notify service.
        role = "leading" if leading else "standing by for"
        notify_ready(f"reached the lock service; {role} {settings.lock_name}")

    Scheduler(
        settings,
        store=wiring.store,
        locks=wiring.locks,
        events=at_start("finding the events queue", lambda: wiring.events, stop),
        clock=wiring.clock,
        stop=stop,
        wait=wait,
        on_ready=tell_systemd_ready,
        wakeups=wiring.wakeups(stop),
        gates=GateReaders(alarms=wiring.alarms, webhooks=wiring.webhooks),
        topic=None if events_topic is None else wiring.topic,
    ).run()


def parse_shard(text: str) -> tuple[int, int]:
    """`2/4` → (2, 4); a clear error for anything else."""
    segment_text, slash, segments_text = text.partition("/")
    segment, segments = whole_number(segment_text), whole_number(segments_text)
    if not slash or segment is None or segments is None:
        raise ValidationError(f"--shard {text!r}: write SEGMENT/SEGMENTS, e.g. 0/1 or 2/4")
    if not 1 <= segments <= 64 or segment >= segments:
        raise ValidationError(
            f"--shard {text!r}: need 1 <= SEGMENTS <= 64 and 0 <= SEGMENT < SEGMENTS"
        )
    return segment, segments
