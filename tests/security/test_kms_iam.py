"""A worker role cannot decrypt another service's environment: what moto can show of it.

The protection has two halves:

1. KMS binds each data key to the encryption context it was generated under
   ({"flotilla:service": NAME}, adapters/secrets.py): Decrypt under any other context
   fails. moto implements this (it is cryptography, not policy); proven for every
   SecretBox in tests/contract/test_secret_box.py::test_another_service_cannot_open_it
   and, with a worker's own credentials under IAM checks, below.
2. The worker role may call kms:Decrypt only with ITS service in that context (the
   `StringEquals kms:EncryptionContext:flotilla:service` condition in
   cfn_templates/service.yaml), so a compromised worker cannot simply pass another
   service's context. The statement is checked exactly, for every load balancer kind, in
   tests/unit/test_worker_policy.py (test_decrypt_is_always_bound_to_the_services_
   encryption_context, test_another_services_worker_gets_its_own_service_only).

What moto's IAM simulation (moto.core.enable_iam_authentication, moto 5.2) enforces, read
from moto/iam/access_control.py and confirmed by these tests:

- enforced: the signature and the Action: a principal without kms:Decrypt is refused
  (with HTTP 403, not AWS's AccessDeniedException code);
- not enforced: Resource for KMS (moto authorises KMS calls against resource "*", so the
  template's statement, naming the key's ARN, matches nothing and refuses every Decrypt;
  the tests give the same statement Resource "*");
- not enforced: Condition (moto evaluates conditions only for role trust policies; for a
  call it has no condition values and treats every condition as met). So under moto a
  worker of service `web` that passes `api`'s context DOES decrypt `api`'s data key: that
  half stands on the policy test alone, pinned here as a strict xfail that turns into a
  failure the day moto enforces conditions, so the check can then be made real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import enable_iam_authentication

from flotilla.adapters.secrets import CONTEXT_KEY, KmsSecretBox
from flotilla.engine.errors import SecretError
from flotilla.engine.records import SealedEnvironment
from tests.unit.test_worker_policy import ENV, role_policy

REGION = "us-east-1"
SECRETS = {"web.service": {"DB_PASSWORD": "pw-of-each-service"}}
# moto answers an IAM refusal of a KMS call in IAM's XML error shape, which botocore's
# JSON parser reads as code "403"; AWS answers AccessDeniedException (which the adapter
# maps to SecretError too, adapters/secrets.py).
DENIED = "AccessDenied|403"


def decrypt_statement(service: str, key_arn: str, *, resource: str) -> dict[str, Any]:
    """The worker role's kms:Decrypt statement, resolved from the template for `service`."""
    document = role_policy(
        "service.yaml",
        "WorkerRole",
        {"EnvironmentName": ENV, "ServiceName": service, "LoadBalancerKind": "none"},
    )
    (statement,) = [s for s in document["Statement"] if "kms:Decrypt" in json.dumps(s["Action"])]
    assert statement["Condition"] == {
        "StringEquals": {f"kms:EncryptionContext:{CONTEXT_KEY}": service}
    }
    return {**statement, "Resource": key_arn if resource == "key" else resource}


@dataclass
class Kms:
    key_arn: str
    admin: Any  # the account's own credentials, before IAM checks are on
    iam: Any

    def worker(self, service: str, statements: list[dict[str, Any]]) -> Any:
        """A KMS client signed by an IAM user holding `statements`, as a worker would be."""
        name = f"worker-{service}-{len(statements)}-{id(statements)}"
        self.iam.create_user(UserName=name)
        if statements:
            self.iam.put_user_policy(
                UserName=name,
                PolicyName="worker",
                PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
            )
        key = self.iam.create_access_key(UserName=name)["AccessKey"]
        return boto3.client(
            "kms",
            region_name=REGION,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            aws_session_token=None,
        )

    def sealed_for(self, service: str) -> SealedEnvironment:
        return KmsSecretBox(self.admin, self.key_arn).seal(service, SECRETS)


@pytest.fixture
def kms() -> Iterator[Kms]:
    with mock_aws():
        admin = boto3.client("kms", region_name=REGION)
        key_arn = admin.create_key(Description="flotilla-prod")["KeyMetadata"]["Arn"]
        yield Kms(key_arn, admin, boto3.client("iam", region_name=REGION))


def test_a_worker_opens_its_own_services_environment(kms: Kms) -> None:
    worker = kms.worker("web", [decrypt_statement("web", kms.key_arn, resource="*")])
    sealed = kms.sealed_for("web")
    with enable_iam_authentication():
        assert KmsSecretBox(worker, kms.key_arn).open("web", sealed) == SECRETS


def test_a_principal_without_decrypt_is_refused(kms: Kms) -> None:
    worker = kms.worker("web", [])
    sealed = kms.sealed_for("web")
    with enable_iam_authentication(), pytest.raises(SecretError, match=DENIED):
        KmsSecretBox(worker, kms.key_arn).open("web", sealed)


def test_moto_authorises_kms_against_resource_star_only(kms: Kms) -> None:
    """The template's statement names the key's ARN; moto compares it with "*" and refuses
    (real IAM would allow it): why the other tests widen Resource to "*"."""
    worker = kms.worker("web", [decrypt_statement("web", kms.key_arn, resource="key")])
    sealed = kms.sealed_for("web")
    with enable_iam_authentication(), pytest.raises(SecretError, match=DENIED):
        KmsSecretBox(worker, kms.key_arn).open("web", sealed)


def test_another_services_data_key_does_not_open_under_the_workers_context(kms: Kms) -> None:
    """What the agent does (it opens with its own service): KMS refuses api's data key."""
    worker = kms.worker("web", [decrypt_statement("web", kms.key_arn, resource="*")])
    sealed = kms.sealed_for("api")
    with enable_iam_authentication(), pytest.raises(SecretError, match="'web'"):
        KmsSecretBox(worker, kms.key_arn).open("web", sealed)


@pytest.mark.xfail(
    strict=True,
    raises=pytest.fail.Exception,  # only "DID NOT RAISE": any other error fails the test
    reason="moto does not evaluate IAM conditions on calls: the worker of `web` passing "
    "`api`'s encryption context is allowed under moto, denied by AWS "
    "(kms:EncryptionContext:flotilla:service StringEquals web; tests/unit/test_worker_policy.py)",
)
def test_a_worker_cannot_decrypt_with_another_services_context(kms: Kms) -> None:
    worker = kms.worker("web", [decrypt_statement("web", kms.key_arn, resource="*")])
    sealed = kms.sealed_for("api")
    with enable_iam_authentication(), pytest.raises(ClientError, match=DENIED):
        worker.decrypt(
            CiphertextBlob=sealed.encrypted_data_key,
            KeyId=kms.key_arn,
            EncryptionContext={CONTEXT_KEY: "api"},
        )
