"""Events out on SNS: each `Notice` published to the environment's topic
`flotilla-<env>-events` (cfn_templates/environment.yaml; an SNS topic, not to be confused
with the SQS queue of the same name that wakes the scheduler), for the operator's own
subscribers (SQS queues, Lambda functions, e-mail, chat bridges).

The message is the notice's JSON (`adapters.items.notices`, docs/events.md); the message
attributes `kind` and `service` let a subscription filter without reading the body (an
SNS filter policy such as `{"kind": ["rollout_failed", "rollout_held"]}`). botocore's
errors become engine errors at the one AWS edge (`adapters.aws_errors`); SNS says
`AuthorizationError` where other services say `AccessDenied`, and `NotFound` for a topic
that does not exist: both are the operator's to fix, `ConfigurationError`.
"""

from __future__ import annotations

from typing import Any

from flotilla.adapters import aws_errors
from flotilla.adapters.items.notices import notice_to_json
from flotilla.engine.ports import Notice
from flotilla.engine.validation import environment_name

SERVICE = "SNS"


def topic_name(environment: str) -> str:
    """The events topic of an environment, as cfn_templates/environment.yaml names it."""
    return f"flotilla-{environment_name(environment)}-events"


def message_attributes(notice: Notice) -> dict[str, dict[str, str]]:
    """What a subscription's filter policy can match on."""
    return {
        "kind": {"DataType": "String", "StringValue": notice.kind},
        "service": {"DataType": "String", "StringValue": notice.service},
    }


class SnsEventTopic:
    """`EventTopic` on one SNS topic, by ARN."""

    def __init__(self, client: Any, topic_arn: str) -> None:
        self._client = client
        self.topic_arn = topic_arn

    def publish(self, notice: Notice) -> None:
        body = notice_to_json(notice)
        answers = {
            "NotFound": (
                f"the events topic {self.topic_arn} does not exist; run `flotilla init` for "
                "this environment, or check --events-topic (FLOTILLA_EVENTS_TOPIC)"
            ),
            "NotFoundException": f"the events topic {self.topic_arn} does not exist",
            "AuthorizationError": (
                f"AWS refused sns:Publish on {self.topic_arn}; give this host's role "
                "permission for it (the environment stack grants its schedulers)"
            ),
        }
        with aws_errors.translated_errors(
            SERVICE, f"publishing {notice.kind} of {notice.service}", missing=answers
        ):
            self._client.publish(
                TopicArn=self.topic_arn,
                Message=body,
                MessageAttributes=message_attributes(notice),
            )
