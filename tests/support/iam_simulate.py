"""DynamoDB requests judged by a maintained IAM evaluator, @cloud-copilot/iam-simulate
(npm, pinned in package.json, installed by ./scripts/setup), through
tests/support/iam_simulate.mjs: one node process for a whole batch.

The request's `dynamodb:LeadingKeys` is passed as a multi-valued context key; a request
that names no key (a Scan) passes none, as AWS does. A request the evaluator cannot judge
as given (an unknown action, a resource of the wrong type, a context key it would drop)
fails the test rather than count as a decision.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.iam_grants import Request

SCRIPT = Path(__file__).with_name("iam_simulate.mjs")
MISSING = 3  # the script's exit status when the evaluator is not installed

ALLOWED = "Allowed"
IMPLICITLY_DENIED = "ImplicitlyDenied"


@dataclass(frozen=True)
class Decision:
    decision: str  # ALLOWED, IMPLICITLY_DENIED or "ExplicitlyDenied"
    allowed_by: tuple[str, ...]  # the Sids of the statements that allowed it


def principal_for(resource: str) -> str:
    """A worker's instance-role session in the resource's account."""
    account = resource.split(":")[4]
    return f"arn:aws:sts::{account}:assumed-role/worker/i-0123456789abcdef0"


def simulate(
    judged: Sequence[tuple[Mapping[str, Any], Request]], script: Path = SCRIPT
) -> list[Decision]:
    """The evaluator's decision on each (identity policy, request), in order."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run ./scripts/setup (it installs npm)", pytrace=False)
    batch = [
        {
            "policy": policy,
            "action": request.action,
            "resource": request.resource,
            "context": (
                {"dynamodb:LeadingKeys": list(request.leading_keys)} if request.leading_keys else {}
            ),
            "principal": principal_for(request.resource),
        }
        for policy, request in judged
    ]
    done = subprocess.run(
        [node, str(script)],
        input=json.dumps(batch),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode == MISSING:
        pytest.fail(done.stderr.strip(), pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"{script.name} exited with {done.returncode}: {done.stderr.strip()}")
    answers = json.loads(done.stdout)
    assert len(answers) == len(batch), (len(answers), len(batch))
    decisions = []
    for (_, request), answer in zip(judged, answers, strict=True):
        if "error" in answer:
            pytest.fail(f"the evaluator could not judge {request}: {answer['error']}")
        decisions.append(Decision(answer["decision"], tuple(answer["allowedBy"])))
    return decisions
