"""The one AWS error edge: every adapter that talks to AWS reads "slow down, try again" from
the same list and the same test (`aws_errors.is_transient`), so no adapter gives up on a
throttle that another retries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from flotilla.adapters import aws_errors, dynamodb_codec, sqs_events
from flotilla.adapters.secrets import KmsSecretBox
from flotilla.engine.errors import ConfigurationError, FlotillaError, TransientError


def client_error(code: str, status: int = 400, message: str = "refused") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "AnyOperation")


class _FailingKms:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def generate_data_key(self, **_: Any) -> Any:
        raise self.error


def _through_aws_errors(exc: Exception) -> None:
    with aws_errors.translated_errors("ELB", "registering i-1"):
        raise exc


def _through_dynamodb(exc: Exception) -> None:
    with dynamodb_codec.translated_errors("reading a service"):
        raise exc


def _through_sqs(exc: Exception) -> None:
    with sqs_events.translated_errors("sending an event"):
        raise exc


def _through_kms(exc: Exception) -> None:
    KmsSecretBox(_FailingKms(exc), "alias/flotilla").seal("api", {"web.service": {"A": "b"}})


ADAPTERS: dict[str, Callable[[Exception], None]] = {
    "elb-s3-cloudformation": _through_aws_errors,
    "dynamodb": _through_dynamodb,
    "sqs": _through_sqs,
    "kms": _through_kms,
}


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
@pytest.mark.parametrize("code", sorted(aws_errors.THROTTLING_CODES))
def test_every_throttling_code_is_transient_at_every_adapter(adapter: str, code: str) -> None:
    with pytest.raises(TransientError):
        ADAPTERS[adapter](client_error(code))


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_a_5xx_is_transient_and_a_plain_refusal_is_not(adapter: str) -> None:
    with pytest.raises(TransientError):
        ADAPTERS[adapter](client_error("SomethingNew", 503))
    with pytest.raises(FlotillaError) as refused:
        ADAPTERS[adapter](client_error("SomethingNew", 400))
    assert not refused.value.retryable


@pytest.mark.parametrize("adapter", ["elb-s3-cloudformation", "dynamodb", "sqs"])
def test_failures_before_aws_answers_are_translated_alike(adapter: str) -> None:
    with pytest.raises(TransientError, match="cannot reach"):
        ADAPTERS[adapter](EndpointConnectionError(endpoint_url="https://example.invalid"))
    with pytest.raises(ConfigurationError, match="AWS_PROFILE"):
        ADAPTERS[adapter](NoCredentialsError())


def test_dynamodb_keeps_its_own_answers() -> None:
    condition = client_error("ConditionalCheckFailedException")
    with pytest.raises(ClientError):  # an answer for the caller, not an error
        _through_dynamodb(condition)
    with pytest.raises(ConfigurationError, match="flotilla-x-services"):
        _through_dynamodb(
            client_error("ResourceNotFoundException", message="table flotilla-x-services")
        )


def test_sqs_says_the_queue_is_missing() -> None:
    with pytest.raises(ConfigurationError, match="events queue does not exist"):
        _through_sqs(client_error("AWS.SimpleQueueService.NonExistentQueue"))
