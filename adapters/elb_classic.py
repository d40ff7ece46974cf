"""A classic Elastic Load Balancer, named, as the deploy machine's `LoadBalancer`.

How DescribeInstanceHealth's answer becomes a `TargetState`, first match wins
(descriptions are matched as substrings, since AWS may join several):

- description "A transient error occurred" → `TransientError` (retried);
- "Instance deregistration currently in progress" → DRAINING: connection draining, which
  AWS reports with state InService, so the description is read before the state;
- "Instance is not currently registered with the LoadBalancer" → UNUSED;
- error InvalidInstance, or the instance left out of the answer (terminated) → UNUSED;
- InService → HEALTHY;
- OutOfService with "Instance registration is still in progress", "... has not passed
  the configured HealthyThreshold ..." or "Instance is in pending state" → INITIAL;
- OutOfService otherwise (failed checks, stopped, zone not enabled, ...) → UNHEALTHY;
- Unknown → one DescribeLoadBalancers: UNUSED if it does not list the instance (moto says
  Unknown for every unregistered instance), else UNHEALTHY (registered, state not known:
  neither drained nor healthy, so the engine's waits go on).

INITIAL and UNHEALTHY differ only in what a person reads: the engine waits for HEALTHY
after registering and for UNUSED after deregistering. An instance that was failing and
is passing again also reads "has not passed the configured HealthyThreshold": it is
reported INITIAL then, too, which is what it is (on its way to healthy).

Deregistering an instance that is not registered, and registering one that is, are
harmless: the deploy machine runs each step again after a crash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from flotilla.adapters.aws_errors import error_code, translated_errors
from flotilla.engine.errors import TransientError
from flotilla.engine.ports import TargetState

if TYPE_CHECKING:
    from mypy_boto3_elb import ElasticLoadBalancingClient
    from mypy_boto3_elb.type_defs import InstanceStateTypeDef

SERVICE = "Elastic Load Balancing"

_DRAINING = "instance deregistration currently in progress"
_NOT_REGISTERED = "instance is not currently registered"
_TRANSIENT = "a transient error occurred"
_INITIAL = (
    "instance registration is still in progress",
    "has not passed the configured healthythreshold",
    "instance is in pending state",
)


class ClassicLoadBalancer:
    """Registers, deregisters and reads the health of instances on one classic ELB."""

    def __init__(self, client: ElasticLoadBalancingClient, name: str) -> None:
        self._client = client
        self.name = name
        self._missing = {
            "LoadBalancerNotFound": (
                f"there is no classic load balancer named {name!r} in this region; create it, "
                "or change the load balancer of the service (check --region too)"
            )
        }

    def deregister(self, instance_id: str) -> None:
        what = f"deregistering {instance_id} from load balancer {self.name!r}"
        with translated_errors(SERVICE, what, missing=self._missing):
            try:
                self._client.deregister_instances_from_load_balancer(
                    LoadBalancerName=self.name, Instances=[{"InstanceId": instance_id}]
                )
            except ClientError as exc:
                # Not registered (or no such instance): it is as deregistered as it gets.
                if error_code(exc) != "InvalidInstance":
                    raise

    def register(self, instance_id: str) -> None:
        what = f"registering {instance_id} with load balancer {self.name!r}"
        missing = {
            **self._missing,
            "InvalidInstance": (
                f"AWS does not know instance {instance_id} as one that can serve behind "
                f"{self.name!r} (no such instance, or another VPC); check the instance id the "
                "agent runs with"
            ),
        }
        with translated_errors(SERVICE, what, missing=missing):
            self._client.register_instances_with_load_balancer(
                LoadBalancerName=self.name, Instances=[{"InstanceId": instance_id}]
            )

    def state(self, instance_id: str) -> TargetState:
        what = f"reading the health of {instance_id} on load balancer {self.name!r}"
        with translated_errors(SERVICE, what, missing=self._missing):
            try:
                answer = self._client.describe_instance_health(
                    LoadBalancerName=self.name, Instances=[{"InstanceId": instance_id}]
                )
            except ClientError as exc:
                if error_code(exc) == "InvalidInstance":
                    return TargetState.UNUSED
                raise
            rows = [row for row in answer["InstanceStates"] if row.get("InstanceId") == instance_id]
            if not rows:  # AWS leaves terminated instances out
                return TargetState.UNUSED
            state = instance_state(rows[0])
            if state is None:
                return self._unknown(instance_id)
            return state

    def _unknown(self, instance_id: str) -> TargetState:
        """State Unknown: ask whether the instance is registered at all."""
        what = f"listing the instances of load balancer {self.name!r}"
        with translated_errors(SERVICE, what, missing=self._missing):
            answer = self._client.describe_load_balancers(LoadBalancerNames=[self.name])
        registered = {
            instance.get("InstanceId")
            for description in answer["LoadBalancerDescriptions"]
            for instance in description.get("Instances", [])
        }
        return TargetState.UNHEALTHY if instance_id in registered else TargetState.UNUSED


def instance_state(row: InstanceStateTypeDef) -> TargetState | None:
    """One row of DescribeInstanceHealth as a `TargetState`; None when AWS says Unknown."""
    description = row.get("Description", "").lower()
    if _TRANSIENT in description:
        raise TransientError(
            f"the load balancer reported {row.get('InstanceId')} in state "
            f"{row.get('State')} ({row.get('Description')}); will retry"
        )
    if _DRAINING in description:
        return TargetState.DRAINING
    if _NOT_REGISTERED in description:
        return TargetState.UNUSED
    match row.get("State"):
        case "InService":
            return TargetState.HEALTHY
        case "OutOfService":
            if any(phrase in description for phrase in _INITIAL):
                return TargetState.INITIAL
            return TargetState.UNHEALTHY
        case _:
            return None
