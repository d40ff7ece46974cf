"""The alarm contract, run against the in-memory alarms and CloudWatch (moto in-process).

The state of each named alarm that exists, in CloudWatch's words; a name that does not
exist is left out; more names than one call may carry (100) are read in batches; an
unreadable CloudWatch is an engine error, never botocore's. What moto cannot show (a
composite alarm, a page token, a throttle, a refusal) is checked on the CloudWatch
adapter with a scripted client, below the shared suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto import mock_aws

from flotilla.adapters.cloudwatch_alarms import CloudWatchAlarms
from flotilla.adapters.memory_alarms import MemoryAlarms
from flotilla.engine.errors import ConfigurationError, FlotillaError, TransientError
from flotilla.engine.ports import Alarms, AlarmState
from tests.support.aws import REGION


@dataclass
class Backend:
    kind: str
    alarms: Alarms
    set_state: Callable[[str, AlarmState], None]  # creates the alarm if it does not exist


def _cloudwatch_setter(client: Any) -> Callable[[str, AlarmState], None]:
    made: set[str] = set()

    def set_state(name: str, state: AlarmState) -> None:
        if name not in made:
            client.put_metric_alarm(
                AlarmName=name,
                MetricName="5xx",
                Namespace="Flotilla/Contract",
                Statistic="Sum",
                Period=60,
                EvaluationPeriods=1,
                Threshold=1.0,
                ComparisonOperator="GreaterThanOrEqualToThreshold",
            )
            made.add(name)
        client.set_alarm_state(AlarmName=name, StateValue=str(state), StateReason="contract")

    return set_state


@pytest.fixture(params=["memory", "moto"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        memory = MemoryAlarms()
        yield Backend("memory", memory, memory.set_state)
        return
    with mock_aws():
        client = boto3.client("cloudwatch", region_name=REGION)
        yield Backend("moto", CloudWatchAlarms(client), _cloudwatch_setter(client))


def test_each_named_alarm_reads_in_its_state(backend: Backend) -> None:
    backend.set_state("api-5xx", AlarmState.ALARM)
    backend.set_state("api-latency", AlarmState.OK)
    backend.set_state("api-saturation", AlarmState.INSUFFICIENT_DATA)
    backend.set_state("other-service", AlarmState.ALARM)
    states = backend.alarms.states(["api-5xx", "api-latency", "api-saturation"])
    assert states == {
        "api-5xx": AlarmState.ALARM,
        "api-latency": AlarmState.OK,
        "api-saturation": AlarmState.INSUFFICIENT_DATA,
    }
    assert all(isinstance(state, AlarmState) for state in states.values())


def test_a_state_change_is_seen_at_the_next_read(backend: Backend) -> None:
    backend.set_state("api-5xx", AlarmState.OK)
    assert backend.alarms.states(["api-5xx"]) == {"api-5xx": AlarmState.OK}
    backend.set_state("api-5xx", AlarmState.ALARM)
    assert backend.alarms.states(["api-5xx"]) == {"api-5xx": AlarmState.ALARM}


def test_a_name_that_does_not_exist_is_left_out(backend: Backend) -> None:
    backend.set_state("api-5xx", AlarmState.OK)
    assert backend.alarms.states(["api-5xx", "no-such-alarm"]) == {"api-5xx": AlarmState.OK}
    assert backend.alarms.states(["no-such-alarm"]) == {}
    assert backend.alarms.states([]) == {}


def test_more_names_than_one_call_carries_are_all_read(backend: Backend) -> None:
    names = [f"alarm-{n:03}" for n in range(230)]
    for n, name in enumerate(names):
        backend.set_state(name, AlarmState.ALARM if n % 7 == 0 else AlarmState.OK)
    states = backend.alarms.states([*names, "missing", names[0]])
    assert set(states) == set(names)
    assert [n for n in names if states[n] is AlarmState.ALARM] == names[::7]


# --- the CloudWatch adapter alone: what moto does not show ------------------------------


class ScriptedCloudWatch:
    """A client whose `describe_alarms` answers from a script (through botocore's real
    paginator machinery is not needed: the adapter only iterates pages)."""

    def __init__(self, answer: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
        self._answer = answer
        self.requests: list[dict[str, Any]] = []

    def get_paginator(self, operation: str) -> Any:
        assert operation == "describe_alarms"
        client = self

        class Paginator:
            def paginate(self, **request: Any) -> Iterator[dict[str, Any]]:
                client.requests.append(request)
                yield from client._answer(request)

        return Paginator()


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "scripted"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "DescribeAlarms",
    )


def test_cloudwatch_asks_for_both_alarm_types_in_batches_of_a_hundred() -> None:
    def answer(request: dict[str, Any]) -> list[dict[str, Any]]:
        names = request["AlarmNames"]
        half = len(names) // 2
        return [  # two pages: metric alarms on the first, composite ones on the second
            {"MetricAlarms": [{"AlarmName": n, "StateValue": "OK"} for n in names[:half]]},
            {"CompositeAlarms": [{"AlarmName": n, "StateValue": "ALARM"} for n in names[half:]]},
        ]

    client = ScriptedCloudWatch(answer)
    names = [f"a{n}" for n in range(201)]
    states = CloudWatchAlarms(client).states(names)
    assert [len(r["AlarmNames"]) for r in client.requests] == [100, 100, 1]
    assert all(r["AlarmTypes"] == ["MetricAlarm", "CompositeAlarm"] for r in client.requests)
    assert set(states) == set(names)
    assert states["a0"] is AlarmState.OK
    assert states["a99"] is AlarmState.ALARM


def test_cloudwatch_reads_a_state_it_does_not_know_as_no_data() -> None:
    client = ScriptedCloudWatch(
        lambda r: [{"MetricAlarms": [{"AlarmName": "a", "StateValue": "SOMETHING_NEW"}]}]
    )
    assert CloudWatchAlarms(client).states(["a"]) == {"a": AlarmState.INSUFFICIENT_DATA}


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (_client_error("Throttling", 400), TransientError),
        (_client_error("InternalFailure", 500), TransientError),
        (_client_error("AccessDenied", 403), ConfigurationError),
        (_client_error("InvalidParameterValue", 400), FlotillaError),
        (EndpointConnectionError(endpoint_url="https://monitoring.example"), TransientError),
    ],
)
def test_cloudwatch_errors_become_engine_errors(
    failure: Exception, expected: type[FlotillaError]
) -> None:
    def answer(request: dict[str, Any]) -> list[dict[str, Any]]:
        raise failure

    with pytest.raises(expected) as raised:
        CloudWatchAlarms(ScriptedCloudWatch(answer)).states(["api-5xx"])
    assert type(raised.value) is expected
    assert "api-5xx" in raised.value.message


def test_memory_alarms_fail_as_told() -> None:
    alarms = MemoryAlarms()
    alarms.set_state("a", AlarmState.OK)
    alarms.fail_with(TransientError("CloudWatch is unreachable"))
    with pytest.raises(TransientError):
        alarms.states(["a"])
    alarms.fail_with(None)
    assert alarms.states(["a"]) == {"a": AlarmState.OK}
