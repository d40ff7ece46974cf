"""The region comes from any of the variables operators and EC2 set, not only botocore's."""

from __future__ import annotations

import pytest

from flotilla.adapters.aws_errors import REGION_VARIABLES
from flotilla.cli.wiring import AwsSettings, Wiring
from flotilla.engine.errors import ConfigurationError


@pytest.fixture
def no_region(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in REGION_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    # A profile with a region of its own would answer instead of the variables.
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/flotilla-test-config")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return monkeypatch


@pytest.mark.parametrize("variable", REGION_VARIABLES)
def test_each_region_variable_alone_is_enough(no_region: pytest.MonkeyPatch, variable: str) -> None:
    no_region.setenv(variable, "eu-west-3")
    wiring = Wiring(AwsSettings.resolve())
    assert wiring.session.region_name == "eu-west-3"
    assert wiring.client("sqs").meta.region_name == "eu-west-3"


def test_flotilla_region_wins_over_the_aws_variables(no_region: pytest.MonkeyPatch) -> None:
    no_region.setenv("AWS_DEFAULT_REGION", "us-east-1")
    no_region.setenv("AWS_REGION", "us-west-2")
    no_region.setenv("FLOTILLA_REGION", "ap-south-1")
    assert AwsSettings.resolve().region == "ap-south-1"
    assert AwsSettings.resolve(region="ca-central-1").region == "ca-central-1"


def test_no_region_names_every_variable(no_region: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Wiring(AwsSettings.resolve()).session  # noqa: B018 - the property is the check
    for variable in REGION_VARIABLES:
        assert variable in str(refused.value)
    assert "--region" in str(refused.value)
