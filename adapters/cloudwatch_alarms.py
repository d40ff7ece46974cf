"""Alarms on CloudWatch: the states of a service's metric and composite alarms, by name.

One `DescribeAlarms` call per hundred names (CloudWatch's most per call), asking for both
alarm types (without `AlarmTypes` CloudWatch answers with metric alarms only, and a
composite alarm would read as missing), following `NextToken` through botocore's
paginator. A name CloudWatch does not know is left out of the answer: the scheduler says
which alarm is missing. botocore's errors become engine errors at the one AWS edge
(`adapters.aws_errors`): a throttle is `TransientError`, a refusal `ConfigurationError`
(the scheduler's role needs `cloudwatch:DescribeAlarms`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flotilla.adapters import aws_errors
from flotilla.engine.ports import AlarmState

SERVICE = "CloudWatch"
MAX_NAMES_PER_CALL = 100  # DescribeAlarms' limit on AlarmNames
ALARM_TYPES = ("MetricAlarm", "CompositeAlarm")


class CloudWatchAlarms:
    """`Alarms` read from CloudWatch with one client (the scheduler's)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def states(self, names: Sequence[str]) -> dict[str, AlarmState]:
        wanted = list(dict.fromkeys(names))  # each name once, in order
        found: dict[str, AlarmState] = {}
        for start in range(0, len(wanted), MAX_NAMES_PER_CALL):
            batch = wanted[start : start + MAX_NAMES_PER_CALL]
            found.update(self._read(batch))
        return found

    def _read(self, names: list[str]) -> dict[str, AlarmState]:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        found: dict[str, AlarmState] = {}
        with aws_errors.translated_errors(SERVICE, f"reading the alarms {shown}"):
            pages = self._client.get_paginator("describe_alarms").paginate(
                AlarmNames=names, AlarmTypes=list(ALARM_TYPES)
            )
            for page in pages:
                for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
                    name = alarm.get("AlarmName")
                    if name in names:
                        found[name] = _state(alarm.get("StateValue"))
        return found


def _state(value: object) -> AlarmState:
    """CloudWatch's state word; one this Flotilla does not know reads as "no data" (neither
    firing nor proven fine), so a new state can never fail a rollout by itself."""
    try:
        return AlarmState(str(value))
    except ValueError:
        return AlarmState.INSUFFICIENT_DATA
