"""The launch templates' user data, rendered from the templates as CloudFormation would.

What runs on a booted machine is in tests/machine/; here: the scripts are valid bash,
shellcheck finds nothing to warn about, both templates share one bootstrap, and the
values a stack passes land where the script reads them.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support.user_data import render_user_data

SHA = "ab" * 32
WHEEL = f"wheels/{SHA}/flotilla_deploy-0.1.0-py3-none-any.whl"
LOCK_SHA = "cd" * 32
LOCK = f"wheels/{LOCK_SHA}/requirements.txt"
COMMON = {
    "AWS::Region": "eu-west-1",
    "AWS::Partition": "aws",
    "EnvironmentName": "prod",
    "FlotillaWheel": WHEEL,
    "FlotillaWheelSha256": SHA,
    "FlotillaRequirements": LOCK,
    "FlotillaRequirementsSha256": LOCK_SHA,
}


def scheduler_script() -> str:
    values = {
        **COMMON,
        "AWS::StackName": "flotilla-prod",
        "ArtifactBucket": "bucket-1",
        "EventsTopic": "arn:aws:sns:eu-west-1:123456789012:flotilla-prod-events",
    }
    return render_user_data("environment.yaml", "SchedulerLaunchTemplate", values)


def worker_script(docker: str = "false") -> str:
    values = {
        **COMMON,
        "AWS::StackName": "flotilla-prod-api",
        "ServiceName": "api",
        "InstallDocker": docker,
    }
    return render_user_data(
        "service.yaml",
        "WorkerLaunchTemplate",
        values,
        {"flotilla-prod-ArtifactBucket": "bucket-1"},
    )


def bootstrap(script: str) -> str:
    begin = script.index("# --- bootstrap: begin")
    end = script.index("# --- bootstrap: end")
    return script[begin:end]


@pytest.mark.parametrize(
    "script", [scheduler_script(), worker_script()], ids=["scheduler", "worker"]
)
def test_the_user_data_is_valid_bash_that_shellcheck_passes(script: str) -> None:
    assert script.startswith("#!/bin/bash\nset -Eeuo pipefail\n")
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    checked = subprocess.run(
        ["shellcheck", "--severity=style", "--exclude=SC1091", "--shell=bash", "-"],
        input=script,
        text=True,
        capture_output=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout


def test_both_templates_share_one_bootstrap() -> None:
    assert bootstrap(scheduler_script()) == bootstrap(worker_script())


def test_the_stack_names_what_the_script_fetches_checks_and_signals() -> None:
    script = worker_script()
    assert "stack='flotilla-prod-api' resource=WorkerGroup region='eu-west-1'" in script
    assert f"bucket='bucket-1' wheel='{WHEEL}' wheel_sha256='{SHA}'" in script
    assert f"requirements='{LOCK}' requirements_sha256='{LOCK_SHA}'" in script
    assert "FLOTILLA_SERVICE=api\nFLOTILLA_ENV=prod\n" in script
    # Both AWS region variables: botocore reads AWS_DEFAULT_REGION, other tools AWS_REGION.
    assert "AWS_REGION=eu-west-1\nAWS_DEFAULT_REGION=eu-west-1\n" in script
    assert "stack='flotilla-prod' resource=SchedulerGroup" in scheduler_script()


def test_no_package_is_installed_by_a_bare_name_from_an_index() -> None:
    """pip installs the pinned requirements with their hashes and the wheel the stack
    names with its sha256; then the same wheel with its systemd extra (satisfied by the
    distribution's packages on Debian and Ubuntu). No other name reaches an index."""
    for script in (scheduler_script(), worker_script()):
        lines = [line.strip() for line in script.splitlines()]
        installs = [line for line in lines if "pip install" in line or "pip_install " in line]
        assert installs == [
            "pip_install() { $venv/bin/python -m pip install -q --disable-pip-version-check"
            ' "$@"; }',
            "pip_install --require-hashes -r $venv/wheels/install.txt",
            'pip_install "${file}[systemd]"',
        ]
        assert '{ cat "$lock"; echo "$file --hash=sha256:$wheel_sha256"; }' in script


def test_docker_is_installed_only_when_the_stack_asks() -> None:
    assert "docker='false'" in worker_script()
    assert "docker='true'" in worker_script("true")
    assert "docker=false" in scheduler_script()


def test_the_user_data_fits_what_ec2_takes() -> None:
    """EC2 refuses user data over 16 KB (before its base64): leave room to grow."""
    for script in (scheduler_script(), worker_script()):
        assert len(script.encode()) < 14 * 1024
