"""Real agent and scheduler processes against a moto server, for crash and integration
tests: the testbed's (testbed/agents.py), which the benchmarks share."""

from __future__ import annotations

from testbed.agents import (
    FLOTILLA,
    AgentProcess,
    AwsWorld,
    aws_world,
    flotilla_cli,
    start_agent,
    start_scheduler,
    wait_for,
)

__all__ = [
    "FLOTILLA",
    "AgentProcess",
    "AwsWorld",
    "aws_world",
    "flotilla_cli",
    "start_agent",
    "start_scheduler",
    "wait_for",
]
