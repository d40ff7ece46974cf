"""The bootstrap's AWS helper: the Python the user data writes to /run before any package
is installed, taken from the rendered user data itself.

Its SigV4 signatures are checked against botocore's own signer for the same request, and
its fetch against S3 in moto, run as the user data runs it (`python3 helper fetch ...`).
The booted-machine suite runs it end to end, signal included (tests/machine).
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import boto3
import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.aws import moto_server
from tests.unit.test_user_data import scheduler_script

REGION = "eu-west-1"
KEY, SECRET, TOKEN = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token"
NOW = datetime.datetime(2026, 12, 4, 22, 31, 11, tzinfo=datetime.UTC)
STAMP = NOW.strftime("%Y%m%dT%H%M%SZ")


def helper_source() -> str:
    script = scheduler_script()
    begin = script.index("cat > \"$helper\" <<'PY'\n") + len("cat > \"$helper\" <<'PY'\n")
    return script[begin : script.index("\nPY\n", begin)]


@pytest.fixture(scope="module")
def helper() -> types.ModuleType:
    module = types.ModuleType("flotilla_bootstrap_helper")
    code = compile(helper_source(), "flotilla-bootstrap.py", "exec")
    exec(code, module.__dict__)  # noqa: S102 -- the user data's own helper, to test it
    return module


@pytest.fixture
def helper_file(tmp_path: Path) -> Path:
    path = tmp_path / "flotilla-bootstrap.py"
    path.write_text(helper_source())
    return path


def test_it_is_python_39_as_amazon_linux_2023_has_it() -> None:
    ast.parse(helper_source(), feature_version=(3, 9))
    assert "${" not in helper_source(), "CloudFormation's Fn::Sub would substitute it"


def botocore_authorization(
    signer: type[botocore.auth.SigV4Auth],
    service: str,
    method: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    signer(Credentials(KEY, SECRET, TOKEN), service, REGION).add_auth(request)
    return str(request.headers["Authorization"])


def helper_headers(url: str, body: bytes, extra: dict[str, str]) -> dict[str, str]:
    """What the helper's `call` sends, for a fixed time."""
    return {
        **extra,
        "host": url.split("/")[2],
        "x-amz-date": STAMP,
        "x-amz-content-sha256": hashlib.sha256(body).hexdigest(),
        "x-amz-security-token": TOKEN,
    }


@pytest.mark.parametrize(
    "key",
    [
        "wheels/" + "ab" * 32 + "/flotilla_deploy-0.1.0-py3-none-any.whl",
        "wheels/" + "cd" * 32 + "/flotilla_deploy-0.1.0+local.7-py3-none-any.whl",
        "wheels/" + "ef" * 32 + "/requirements.txt",
    ],
)
@pytest.mark.parametrize("endpoint", ["", "http://127.0.0.1:5000"])
def test_an_s3_get_is_signed_as_botocore_signs_it(
    helper: types.ModuleType, monkeypatch: pytest.MonkeyPatch, key: str, endpoint: str
) -> None:
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    if endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    else:
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    url = helper.s3_url("flotilla-prod-artifactbucket-1a2b", key)
    expected_host = "127.0.0.1:5000" if endpoint else "flotilla-prod-artifactbucket-1a2b.s3."
    assert expected_host in url
    ours = helper.authorization("GET", url, helper_headers(url, b"", {}), "s3", REGION, KEY, SECRET)
    theirs = botocore_authorization(
        botocore.auth.S3SigV4Auth, "s3", "GET", url, b"", {}, monkeypatch
    )
    assert ours == theirs


def test_a_signal_resource_post_is_signed_as_botocore_signs_it(
    helper: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"https://cloudformation.{REGION}.amazonaws.com/"
    body = (
        b"Action=SignalResource&Version=2010-05-15&StackName=flotilla-prod"
        b"&LogicalResourceId=SchedulerGroup&UniqueId=i-0123456789abcdef0&Status=FAILURE"
    )
    form = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
    headers = helper_headers(url, body, form)
    ours = helper.authorization("POST", url, headers, "cloudformation", REGION, KEY, SECRET)
    # botocore signs every header it is given: give it the same ones the helper sends.
    given = {
        "content-type": form["content-type"],
        "x-amz-content-sha256": headers["x-amz-content-sha256"],
    }
    theirs = botocore_authorization(
        botocore.auth.SigV4Auth, "cloudformation", "POST", url, body, given, monkeypatch
    )
    assert ours == theirs


def test_a_china_region_gets_its_own_domain(
    helper: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_CLOUDFORMATION"):
        monkeypatch.delenv(name, raising=False)
    assert helper.endpoint("cloudformation", "cn-north-1") == (
        "https://cloudformation.cn-north-1.amazonaws.com.cn",
        False,
    )


# --- fetch, against S3 in moto -----------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


def fetch(helper_file: Path, endpoint: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    return subprocess.run(
        [sys.executable, str(helper_file), "fetch", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> str:
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="artifacts", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket="artifacts", Key="wheels/x/a_b-1.0+local-py3-none-any.whl", Body=b"wheel")
    return "artifacts"


def test_fetch_stores_a_file_whose_hash_matches_and_prints_where(
    helper_file: Path, s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    digest = hashlib.sha256(b"wheel").hexdigest()
    key = "wheels/x/a_b-1.0+local-py3-none-any.whl"
    done = fetch(helper_file, s3_endpoint, bucket, key, digest, str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    stored = Path(done.stdout.strip())
    assert stored == tmp_path / "out/a_b-1.0+local-py3-none-any.whl"
    assert stored.read_bytes() == b"wheel"


def test_fetch_refuses_another_hash_in_one_line_and_stores_nothing(
    helper_file: Path, s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    key = "wheels/x/a_b-1.0+local-py3-none-any.whl"
    done = fetch(helper_file, s3_endpoint, bucket, key, "0" * 64, str(tmp_path / "out"))
    assert done.returncode == 1
    actual = hashlib.sha256(b"wheel").hexdigest()
    assert done.stdout == (
        f"a_b-1.0+local-py3-none-any.whl has sha256 {actual}, the stack expects {'0' * 64}\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("where", "code"),
    [
        (("no-such-bucket", "wheels/x/a.whl"), "404 NoSuchBucket"),
        (("artifacts", "wheels/y"), "404 NoSuchKey"),
    ],
)
def test_fetch_says_what_s3_answered(
    helper_file: Path,
    s3_endpoint: str,
    bucket: str,
    tmp_path: Path,
    where: tuple[str, str],
    code: str,
) -> None:
    done = fetch(helper_file, s3_endpoint, *where, "0" * 64, str(tmp_path))
    assert done.returncode == 1
    assert done.stdout == f"cannot fetch {where[1]} from {where[0]}: AWS answered {code}\n"
    assert done.stderr == ""
