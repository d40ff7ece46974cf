"""Every AWS setting validated where it is read (cli.settings), with one line naming the
setting and where it came from; what botocore refuses becomes one line at the edge where
sessions and clients are made (cli.wiring); a command's clients give up in seconds and
say when they retry (cli.aws_calls)."""

from __future__ import annotations

import socket
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from flotilla.cli import aws_calls
from flotilla.cli.settings import resolve
from flotilla.cli.wiring import AwsSettings, Wiring
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import ConfigurationError, TransientError, ValidationError

CLEAN = {"AWS_REGION": "us-east-1"}


@pytest.mark.parametrize(
    ("options", "variables", "message"),
    [
        ({"endpoint_url": "127.0.0.1:5055"}, {},
         "invalid endpoint URL '127.0.0.1:5055' (from --endpoint-url): it needs http://"),
        ({"endpoint_url": "http://127.0.0.1:notaport"}, {},
         "(from --endpoint-url): the port must be a number from 1 to 65535"),
        ({"endpoint_url": "http://:5000"}, {}, "it names no host"),
        ({"endpoint_url": "http://127.0.0.1:0"}, {}, "the port must be a number"),
        ({"endpoint_url": " http://127.0.0.1:5000"}, {}, "it contains blanks"),
        ({}, {"FLOTILLA_ENDPOINT_URL": ""}, "FLOTILLA_ENDPOINT_URL is set but empty"),
        ({}, {"FLOTILLA_ENDPOINT_URL": "localhost:4566"}, "(from FLOTILLA_ENDPOINT_URL)"),
        ({}, {"AWS_ENDPOINT_URL": "nourl"}, "(from AWS_ENDPOINT_URL)"),
        ({"region": "bad region"}, {},
         "invalid AWS region 'bad region' (from --region): a region is a name like eu-west-1"),
        ({}, {"AWS_REGION": "eu_west_1!"}, "(from AWS_REGION)"),
        ({}, {"FLOTILLA_REGION": "x" * 70}, "(from FLOTILLA_REGION)"),
        ({"environment": "Prod"}, {}, "invalid environment name 'Prod' (from --env)"),
        ({}, {"FLOTILLA_ENV": "a b"}, "invalid environment name 'a b' (from FLOTILLA_ENV)"),
    ],
)  # fmt: skip
def test_a_bad_setting_names_itself_and_where_it_came_from(
    options: dict[str, str], variables: dict[str, str], message: str
) -> None:
    given = {"environment": None, "region": None, "profile": None, "endpoint_url": None, **options}
    with pytest.raises(ValidationError) as refused:
        resolve(**given, environ={**CLEAN, **variables})
    assert message in refused.value.message
    assert "\n" not in refused.value.message


def test_options_win_and_each_source_is_recorded() -> None:
    read = resolve(
        "prod",
        None,
        None,
        "http://127.0.0.1:5000",
        environ={
            "FLOTILLA_ENV": "staging",
            "AWS_REGION": "eu-west-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "FLOTILLA_ENDPOINT_URL": "http://127.0.0.1:6000",
            "AWS_PROFILE": "ops",
        },
    )
    assert (read.environment, read.region, read.endpoint_url) == (
        "prod",
        "eu-west-1",
        "http://127.0.0.1:5000",
    )
    assert read.sources == {
        "environment": "--env",
        "region": "AWS_REGION",
        "endpoint_url": "--endpoint-url",
        "profile": "AWS_PROFILE",
    }
    # Empty options are "not given"; empty region variables are "not set".
    read = resolve(
        "", "", "", "", environ={"AWS_REGION": " ", "AWS_DEFAULT_REGION": "ca-central-1"}
    )
    assert (read.environment, read.region, read.endpoint_url) == ("default", "ca-central-1", None)


def test_what_botocore_refuses_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "config"
    broken.write_text("[default\nregion=")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(broken))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with pytest.raises(ConfigurationError, match="Unable to parse config file") as refused:
        Wiring(AwsSettings.resolve(region="us-east-1")).client("dynamodb")
    assert "\n" not in refused.value.message
    profiles = tmp_path / "profiles"
    profiles.write_text("[profile odd]\nregion = bad region\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(profiles))
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION", "FLOTILLA_REGION"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigurationError, match="doesn't match a supported format"):
        Wiring(AwsSettings.resolve(profile="odd")).client("dynamodb")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_PROFILE", "nosuch")
    with pytest.raises(ConfigurationError, match=r"profile 'nosuch' \(from AWS_PROFILE\)"):
        Wiring(AwsSettings.resolve()).client("dynamodb")
    monkeypatch.delenv("AWS_PROFILE")
    monkeypatch.setenv("AWS_STS_REGIONAL_ENDPOINTS", "sideways")
    with pytest.raises(ConfigurationError, match="botocore refused the AWS settings"):
        Wiring(AwsSettings.resolve()).client("sts")


# --- a person's calls ---------------------------------------------------------------------


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not done.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    done.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def test_a_commands_clients_wait_seconds_and_retry_aloud(
    silent_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    settings = AwsSettings.resolve(region="us-east-1", endpoint_url=silent_endpoint)
    clock = FakeClock()
    person = Wiring(settings, clock, interactive=True)
    config = person.client("dynamodb").meta.config
    assert (config.connect_timeout, config.read_timeout) == (2, 4)
    assert config.retries["total_max_attempts"] == 1  # the retries are ours, said aloud
    # The same, reading for half a second instead of four, so the test does not wait 12 s.
    monkeypatch.setattr(aws_calls, "READ_SECONDS", 0.5)
    monkeypatch.setattr(
        aws_calls,
        "CLI_CLIENT_CONFIG",
        aws_calls.CLI_CLIENT_CONFIG.merge(Config(read_timeout=0.5)),
    )
    person = Wiring(settings, clock, interactive=True)
    with pytest.raises(TransientError, match="cannot reach DynamoDB"):
        person.store.list_services()
    notes = capsys.readouterr().err.strip().splitlines()
    assert notes == [
        "note: DynamoDB Scan: no answer within 0.5 s; trying again (attempt 2 of 3)",
        "note: DynamoDB Scan: no answer within 0.5 s; trying again (attempt 3 of 3)",
    ]
    # A daemon keeps botocore's patient settings and says nothing.
    daemon = Wiring(settings).client("dynamodb")
    assert daemon.meta.config.read_timeout == 10
    assert not isinstance(daemon, aws_calls.RetryingClient)


def test_failures_are_retried_and_answers_are_not() -> None:
    calls: list[str] = []
    meta = types.SimpleNamespace(
        method_to_api_mapping={"get_item": "GetItem", "put_item": "PutItem"},
        service_model=types.SimpleNamespace(service_id="DynamoDB"),
    )

    def get_item(**_: object) -> None:
        calls.append("get_item")
        raise EndpointConnectionError(endpoint_url="http://x")

    def put_item(**_: object) -> None:
        calls.append("put_item")
        raise ClientError(
            {"Error": {"Code": "ConditionalCheckFailedException", "Message": "no"}}, "PutItem"
        )

    client = types.SimpleNamespace(meta=meta, get_item=get_item, put_item=put_item)
    retrying = aws_calls.RetryingClient(client, FakeClock())
    with pytest.raises(EndpointConnectionError):  # the adapter translates it, as always
        retrying.get_item(TableName="t")
    assert calls == ["get_item"] * aws_calls.CLI_CALLS.attempts
    calls.clear()
    with pytest.raises(ClientError):
        retrying.put_item(TableName="t")
    assert calls == ["put_item"]  # another writer won: an answer, never retried
    assert retrying.meta is meta  # everything else is the client's own


@pytest.mark.parametrize(
    "value",
    [
        "arn:aws:sns:eu-west-1:123456789012:flotilla-prod-events",
        "arn:aws-cn:sns:cn-north-1:123456789012:flotilla-prod-events",
        "arn:aws-us-gov:sns:us-gov-west-1:123456789012:events.fifo",
    ],
)
def test_an_events_topic_is_an_sns_topics_arn(value: str) -> None:
    from flotilla.cli.settings import topic_arn

    assert topic_arn(value, "--events-topic") == value


@pytest.mark.parametrize(
    "value",
    [
        "flotilla-prod-events",  # a name, not an ARN
        "arn:aws:sqs:eu-west-1:123456789012:flotilla-prod-events",  # the queue
        "arn:aws:sns:eu-west-1:1234:flotilla-prod-events",
        "arn:aws:sns:eu-west-1:123456789012:",
        "arn:aws:sns:eu-west-1:123456789012:bad name",
    ],
)
def test_a_bad_events_topic_is_one_line_naming_where_it_came_from(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flotilla.cli.main import main

    monkeypatch.setenv("FLOTILLA_EVENTS_TOPIC", value)
    monkeypatch.setattr("sys.argv", ["flotilla", "scheduler", "--region", "us-east-1"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(
        f"error: invalid events topic {value[:80]!r} (from FLOTILLA_EVENTS_TOPIC)"
    )
    assert len(error.strip().splitlines()) == 1


def test_the_wiring_says_how_to_name_the_events_topic() -> None:
    wiring = Wiring(AwsSettings("prod", "eu-west-1"))
    with pytest.raises(ConfigurationError, match="--events-topic ARN or set FLOTILLA_EVENTS_TOPIC"):
        _ = wiring.topic
    named = Wiring(AwsSettings("prod", "eu-west-1"), events_topic="arn:aws:sns:eu-west-1:1:t")
    assert named.topic.topic_arn == "arn:aws:sns:eu-west-1:1:t"
