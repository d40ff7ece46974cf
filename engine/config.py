"""Configuration records, built once at an entry point and passed down.

Names of AWS resources derive from the environment name, exactly as
cfn_templates/environment.yaml names them.
"""

from __future__ import annotations

from dataclasses import dataclass

from flotilla.engine.validation import environment_name


@dataclass(frozen=True)
class TableNames:
    """The DynamoDB tables of one environment."""

    services: str
    revisions: str
    instances: str
    deploys: str
    locks: str
    users: str

    @classmethod
    def for_environment(cls, environment: str) -> TableNames:
        prefix = f"flotilla-{environment_name(environment)}"
        return cls(
            services=f"{prefix}-services",
            revisions=f"{prefix}-revisions",
            instances=f"{prefix}-instances",
            deploys=f"{prefix}-deploys",
            locks=f"{prefix}-locks",
            users=f"{prefix}-users",
        )
