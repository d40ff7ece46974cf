"""An ELBv2 target group (ALB or NLB), by ARN, as the deploy machine's `LoadBalancer`.

Targets are instances: `Id` is the instance id, and `Port` the given port, or none so
that the target group's own port is used. DescribeTargetHealth's states map one to one,
with these choices:

- healthy → HEALTHY;
- initial (Elb.RegistrationInProgress, Elb.InitialHealthChecking) → INITIAL;
- draining (Target.DeregistrationInProgress) → DRAINING;
- unhealthy, unhealthy.draining → UNHEALTHY (still registered);
- unavailable (health checks disabled, which instance targets cannot be) → UNHEALTHY;
- unused (not registered; or the group serves no load balancer; or the instance is
  stopped: no traffic in every case) → UNUSED;
- error InvalidTarget (no such instance), or the instance left out of the answer → UNUSED;
- a state this version does not know → UNHEALTHY, with a warning: never taken for
  drained or healthy.

Without a port an instance may be registered on several ports: rows in state unused are
then ignored, HEALTHY needs every other row healthy, and a mix reports the first of
UNHEALTHY, DRAINING, INITIAL that occurs (neither drained nor healthy, so waits go on).

Deregistering an instance that is not registered (moto answers InvalidTarget) and
registering one that is are harmless: the deploy machine runs each step again after a
crash.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from flotilla.adapters.aws_errors import error_code, translated_errors
from flotilla.engine.ports import TargetState

if TYPE_CHECKING:
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
    from mypy_boto3_elbv2.type_defs import TargetDescriptionTypeDef

log = logging.getLogger(__name__)

SERVICE = "Elastic Load Balancing"

STATES = {
    "healthy": TargetState.HEALTHY,
    "initial": TargetState.INITIAL,
    "draining": TargetState.DRAINING,
    "unhealthy": TargetState.UNHEALTHY,
    "unhealthy.draining": TargetState.UNHEALTHY,
    "unavailable": TargetState.UNHEALTHY,
    "unused": TargetState.UNUSED,
}

# Which state a mix of rows (several ports) reports: the least advanced one.
_MIX_ORDER = (TargetState.UNHEALTHY, TargetState.DRAINING, TargetState.INITIAL)


class TargetGroupLoadBalancer:
    """Registers, deregisters and reads the health of instances in one target group."""

    def __init__(
        self, client: ElasticLoadBalancingv2Client, target_group_arn: str, port: int | None = None
    ) -> None:
        self._client = client
        self.target_group_arn = target_group_arn
        self.port = port
        self._missing = {
            "TargetGroupNotFound": (
                f"there is no target group {target_group_arn} in this account and region; "
                "create it, or change the load balancer of the service (check --region too)"
            )
        }

    def _target(self, instance_id: str) -> TargetDescriptionTypeDef:
        if self.port is None:
            return {"Id": instance_id}
        return {"Id": instance_id, "Port": self.port}

    def deregister(self, instance_id: str) -> None:
        what = f"deregistering {instance_id} from target group {self.target_group_arn}"
        with translated_errors(SERVICE, what, missing=self._missing):
            try:
                self._client.deregister_targets(
                    TargetGroupArn=self.target_group_arn, Targets=[self._target(instance_id)]
                )
            except ClientError as exc:
                # Not registered (or no such instance): it is as deregistered as it gets.
                if error_code(exc) != "InvalidTarget":
                    raise

    def register(self, instance_id: str) -> None:
        what = f"registering {instance_id} with target group {self.target_group_arn}"
        missing = {
            **self._missing,
            "InvalidTarget": (
                f"AWS cannot register instance {instance_id} in {self.target_group_arn} (no "
                "such instance, not running, or in another VPC); check the instance id the "
                "agent runs with and the target group's VPC"
            ),
        }
        with translated_errors(SERVICE, what, missing=missing):
            self._client.register_targets(
                TargetGroupArn=self.target_group_arn, Targets=[self._target(instance_id)]
            )

    def state(self, instance_id: str) -> TargetState:
        what = f"reading the health of {instance_id} in target group {self.target_group_arn}"
        with translated_errors(SERVICE, what, missing=self._missing):
            try:
                answer = self._client.describe_target_health(
                    TargetGroupArn=self.target_group_arn, Targets=[self._target(instance_id)]
                )
            except ClientError as exc:
                if error_code(exc) == "InvalidTarget":
                    return TargetState.UNUSED
                raise
        states = [
            target_state(row.get("TargetHealth", {}).get("State", ""), instance_id)
            for row in answer["TargetHealthDescriptions"]
            if row["Target"]["Id"] == instance_id
            and (self.port is None or row["Target"].get("Port") == self.port)
        ]
        return combined(states)


def target_state(aws_state: str, instance_id: str) -> TargetState:
    state = STATES.get(aws_state)
    if state is None:
        log.warning(
            "target %s is in state %r, which this version does not know; taking it for unhealthy",
            instance_id,
            aws_state,
        )
        return TargetState.UNHEALTHY
    return state


def combined(states: list[TargetState]) -> TargetState:
    """One state for an instance registered on several ports (see the module's docstring)."""
    registered = [state for state in states if state is not TargetState.UNUSED]
    if not registered:
        return TargetState.UNUSED
    if all(state is TargetState.HEALTHY for state in registered):
        return TargetState.HEALTHY
    return next(state for state in _MIX_ORDER if state in registered)
