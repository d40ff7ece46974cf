"""The workers' IAM policies judged by a maintained evaluator, not only by our own judge.

moto does not evaluate IAM conditions, and the judge of tests/support/iam_grants.py
proves only what its author understood of IAM. Here the same requests go to
@cloud-copilot/iam-simulate (npm, pinned in package.json; tests/support/iam_simulate.py),
which evaluates identity policies with every condition operator, `ForAllValues:` over
multi-valued keys such as `dynamodb:LeadingKeys` included, and checks each action and
each resource's type against AWS's service reference (its iam-data package):

1. Every DynamoDB request `api`'s agent makes through a whole deploy on moto (the
   recording of tests/security/test_scoped_keys.py) is Allowed by `api`'s worker policy,
   by the statement meant for it, and implicitly denied by the policy of every other
   service, including those whose names begin with `api`.
2. A table of hand-picked requests (another service's instance, deploy and by-instance
   index keys, deploy locks, Scans, the users table, a request naming two keys) gets the
   same decision from the evaluator as from our judge, under `api`'s and `billing`'s
   policies: each checks the other.
3. The evaluator can say no for the right reason: `api`'s policy with the LeadingKeys
   conditions removed (or loosened to `api*`) lets a worker of `api` write `billing`'s
   keys, and a request the evaluator cannot judge fails the test instead of passing.

Not proven here: what AWS itself decides (the evaluator is a model of IAM, maintained
against AWS's documentation, not AWS), or that the recorded `LeadingKeys` are the ones
DynamoDB would put in the request context (tests/support/iam_grants.py derives them
from the request's key, as AWS documents).
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flotilla.scheduler.leader import lock_name
from tests.support.iam_grants import Request, allowed
from tests.support.iam_simulate import ALLOWED, IMPLICITLY_DENIED, SCRIPT, simulate
from tests.support.recorded_deploy import (
    OTHERS,
    World,
    record_an_agents_deploy,
    recording_world,
    worker_policy,
)
from tests.unit.test_worker_policy import table


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with recording_world(tmp_path) as made:
        yield made


# The statement of service.yaml's WorkerRole meant for each table (or index) the agent uses.
MEANT_FOR = {
    "flotilla-prod-services": "ReadOwnService",
    "flotilla-prod-revisions": "ReadOwnRevisions",
    "flotilla-prod-instances": "WriteInstanceItems",
    "flotilla-prod-deploys": "WriteDeployCheckpoints",
    "by-instance": "QueryInstanceDeploys",
    "flotilla-prod-locks": "UseLocks",
}


def test_every_request_of_an_agents_deploy_is_allowed_to_its_service_only(world: World) -> None:
    requests = sorted(record_an_agents_deploy(world), key=repr)
    places = {r.resource.rsplit("/", 1)[-1] for r in requests}
    assert places <= set(MEANT_FOR)
    assert places >= {"flotilla-prod-instances", "flotilla-prod-deploys", "flotilla-prod-locks"}
    assert "by-instance" in places  # the resume query
    assert all(r.leading_keys for r in requests)  # every one names its key: none is a Scan
    services = ("api", *OTHERS)
    judged = [(worker_policy(service), r) for service in services for r in requests]
    decisions = simulate(judged)
    by_service = {
        service: decisions[n * len(requests) : (n + 1) * len(requests)]
        for n, service in enumerate(services)
    }

    for request, decision in zip(requests, by_service["api"], strict=True):
        assert decision.decision == ALLOWED, (request, decision)
        assert decision.allowed_by == (MEANT_FOR[request.resource.rsplit("/", 1)[-1]],)
    for other in OTHERS:
        reached = [
            (r, d)
            for r, d in zip(requests, by_service[other], strict=True)
            if d.decision != IMPLICITLY_DENIED
        ]
        assert reached == [], f"a worker of {other!r} could make {reached}"


def request(action: str, place: str, *keys: str) -> Request:
    return Request(f"dynamodb:{action}", table(place), keys)


# (what it is, the request, whether `api`'s worker policy allows it)
HAND_PICKED = [
    ("its own instance", request("UpdateItem", "instances", "api/i-1"), True),
    ("another service's instance", request("UpdateItem", "instances", "billing/i-1"), False),
    ("a longer name's instance", request("UpdateItem", "instances", "api2/i-1"), False),
    ("an instance key of the old shape", request("UpdateItem", "instances", "i-1"), False),
    ("deleting its own instance", request("DeleteItem", "instances", "api/i-1"), False),
    ("its own deploy", request("PutItem", "deploys", "api/i-1.3"), True),
    ("another service's deploy", request("PutItem", "deploys", "billing/i-1.3"), False),
    ("a longer name's deploy", request("PutItem", "deploys", "api-b/i-1.3"), False),
    ("a deploy key of the old shape", request("PutItem", "deploys", "i-1.3"), False),
    ("a deploy key without a number", request("PutItem", "deploys", "api/i-1"), False),
    ("its own by-instance key", request("Query", "deploys/index/by-instance", "api/i-1"), True),
    (
        "another's by-instance key",
        request("Query", "deploys/index/by-instance", "billing/i-1"),
        False,
    ),
    ("its deploys through the table", request("Query", "deploys", "api/i-1.3"), False),
    ("the by-service index", request("Query", "deploys/index/by-service", "api"), False),
    ("its own deploy lock", request("UpdateItem", "locks", "deploy/api"), True),
    ("another service's deploy lock", request("UpdateItem", "locks", "deploy/billing"), False),
    ("a longer name's deploy lock", request("UpdateItem", "locks", "deploy/api2"), False),
    ("the scheduler's lock", request("UpdateItem", "locks", lock_name(0, 1)), False),
    ("a shard's scheduler lock", request("UpdateItem", "locks", lock_name(1, 2)), False),
    ("its own service", request("GetItem", "services", "api"), True),
    ("writing its own service", request("UpdateItem", "services", "api"), False),
    ("another service", request("GetItem", "services", "billing"), False),
    ("its own revisions", request("Query", "revisions", "api"), True),
    ("another service's revisions", request("Query", "revisions", "billing"), False),
    ("a Scan of the instances", request("Scan", "instances"), False),
    ("a Scan of the deploys", request("Scan", "deploys"), False),
    ("a Scan of the locks", request("Scan", "locks"), False),
    ("a user, for SSH", request("GetItem", "users", "alice"), True),
    ("a Scan of the users, for SSH", request("Scan", "users"), True),
    ("writing a user", request("PutItem", "users", "alice"), False),
    (
        "its own and another's key",
        request("UpdateItem", "instances", "api/i-1", "billing/i-1"),
        False,
    ),
]


def test_hand_picked_requests_get_the_same_decision_from_the_evaluator_and_our_judge() -> None:
    services = ("api", "billing")
    judged = [(worker_policy(s), r) for s in services for _, r, _ in HAND_PICKED]
    decisions = [d.decision for d in simulate(judged)]
    disagreements = [
        (r, d)
        for (policy, r), d in zip(judged, decisions, strict=True)
        if (d == ALLOWED) != allowed(policy, r)
    ]
    assert disagreements == []

    apis, billings = decisions[: len(HAND_PICKED)], decisions[len(HAND_PICKED) :]
    for (what, _, expected), decision in zip(HAND_PICKED, apis, strict=True):
        assert (decision == ALLOWED) == expected, (what, decision)
    # billing's policy reaches billing's own keys (the "another ..." rows) and the users
    # table, which every worker reads; nothing of api's
    reached = {what for (what, _, _), d in zip(HAND_PICKED, billings, strict=True) if d == ALLOWED}
    assert reached == {
        "another service's instance",
        "another service's deploy",
        "another's by-instance key",
        "another service's deploy lock",
        "another service",
        "another service's revisions",
        "a user, for SSH",
        "a Scan of the users, for SSH",
    }


def _with_leading_keys(policy: dict[str, Any], patterns: list[str] | None) -> dict[str, Any]:
    """A copy of `policy` whose LeadingKeys conditions test `patterns`, or are gone."""
    changed = copy.deepcopy(policy)
    for statement in changed["Statement"]:
        condition = statement.get("Condition", {})
        for operator in [o for o in condition if o.startswith("ForAllValues:")]:
            if patterns is None:
                del condition[operator]
            else:
                condition[operator] = {"dynamodb:LeadingKeys": patterns}
        if condition == {}:
            statement.pop("Condition", None)
    return changed


def test_the_evaluator_lets_another_services_key_through_once_the_condition_goes() -> None:
    """So that the denials above mean something: they come from the LeadingKeys condition."""
    intact = worker_policy("api")
    unconditioned = _with_leading_keys(intact, None)
    loose = _with_leading_keys(intact, ["api*"])  # a prefix without its `/`
    theirs = request("UpdateItem", "instances", "billing/i-1")
    longer = request("UpdateItem", "instances", "api2/i-1")
    judged = [
        (intact, theirs),
        (unconditioned, theirs),
        (intact, longer),
        (loose, longer),
        (loose, theirs),
    ]
    decisions = [d.decision for d in simulate(judged)]
    assert decisions == [IMPLICITLY_DENIED, ALLOWED, IMPLICITLY_DENIED, ALLOWED, IMPLICITLY_DENIED]
    assert [allowed(policy, r) for policy, r in judged] == [d == ALLOWED for d in decisions]


def test_a_request_the_evaluator_cannot_judge_fails_instead_of_passing() -> None:
    """DescribeTable takes no `LeadingKeys`: the evaluator would drop the key and judge the
    request without it, which under `ForAllValues:` reads as a match."""
    describe = request("DescribeTable", "instances", "billing/i-1")
    with pytest.raises(pytest.fail.Exception, match="ignored the context keys"):
        simulate([(worker_policy("api"), describe)])
    unknown = request("PutItems", "instances", "api/i-1")
    with pytest.raises(pytest.fail.Exception, match="could not judge"):
        simulate([(worker_policy("api"), unknown)])


def test_a_missing_evaluator_fails_with_how_to_install_it(tmp_path: Path) -> None:
    """The script run from where no node_modules can be found (outside the checkout)."""
    alone = tmp_path / SCRIPT.name
    shutil.copy(SCRIPT, alone)
    with pytest.raises(pytest.fail.Exception, match=r"not installed.*run \./scripts/setup"):
        simulate([(worker_policy("api"), request("GetItem", "services", "api"))], script=alone)
