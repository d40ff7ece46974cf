"""The secret box contract, for KMS (on moto) and the local master key alike."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    ReadTimeoutError,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from flotilla.adapters.secrets import KmsSecretBox, LocalSecretBox
from flotilla.engine.errors import (
    ConfigurationError,
    FlotillaError,
    SecretError,
    TransientError,
)
from flotilla.engine.ports import SecretBox
from flotilla.engine.records import SealedBlob, SealedEnvironment

ENVIRONMENTS = {
    "web.service": {"DB_PASSWORD": "s3cr3t", "GREETING": "hello, wörld ✓ 你好 🚢"},
    "worker.service": {"QUEUE": "jobs", "MULTI": 'line one\nline "two" $HOME `x` \\'},
}


@dataclass
class Box:
    box: SecretBox
    kms: Any = None


@pytest.fixture(params=["local", "kms"])
def box(request: pytest.FixtureRequest) -> Iterator[Box]:
    if request.param == "local":
        yield Box(LocalSecretBox(os.urandom(32)))
        return
    with mock_aws():
        kms = boto3.client("kms", region_name="us-east-1")
        key_id = kms.create_key(Description="flotilla test")["KeyMetadata"]["KeyId"]
        yield Box(KmsSecretBox(kms, key_id), kms)


def test_a_sealed_environment_opens_to_the_same_variables(box: Box) -> None:
    sealed = box.box.seal("api", ENVIRONMENTS)
    assert box.box.open("api", sealed) == ENVIRONMENTS
    assert sealed.variable_names == {
        "web.service": ("DB_PASSWORD", "GREETING"),
        "worker.service": ("MULTI", "QUEUE"),
    }


def test_each_unit_has_its_own_blob_and_no_value_is_in_the_clear(box: Box) -> None:
    sealed = box.box.seal("api", ENVIRONMENTS)
    assert set(sealed.blobs) == set(ENVIRONMENTS)
    everything = repr(sealed).encode() + b"".join(
        b.nonce + b.ciphertext for b in sealed.blobs.values()
    )
    for variables in ENVIRONMENTS.values():
        for value in variables.values():
            assert value.encode() not in everything
    for unit, variables in ENVIRONMENTS.items():
        # A revision holding only this unit's blob opens to this unit's variables alone.
        alone = dataclasses.replace(sealed, blobs={unit: sealed.blobs[unit]})
        assert box.box.open("api", alone) == {unit: variables}


def test_another_service_cannot_open_it(box: Box) -> None:
    sealed = box.box.seal("api", ENVIRONMENTS)
    with pytest.raises(SecretError, match="'billing'"):
        box.box.open("billing", sealed)


@pytest.mark.parametrize("part", ["ciphertext", "nonce", "data key"])
def test_a_flipped_byte_anywhere_is_refused(box: Box, part: str) -> None:
    sealed = box.box.seal("api", ENVIRONMENTS)
    blob = sealed.blobs["web.service"]
    original = {
        "ciphertext": blob.ciphertext,
        "nonce": blob.nonce,
        "data key": sealed.encrypted_data_key,
    }[part]
    for position in range(len(original)):  # every byte, the GCM tag's and the IV's included
        altered = _flip(original, position)
        if part == "ciphertext":
            tampered = _with_blob(sealed, SealedBlob(blob.nonce, altered))
        elif part == "nonce":
            tampered = _with_blob(sealed, SealedBlob(altered, blob.ciphertext))
        else:
            tampered = dataclasses.replace(sealed, encrypted_data_key=altered)
        with pytest.raises(SecretError):
            box.box.open("api", tampered)


def _with_blob(sealed: SealedEnvironment, blob: SealedBlob) -> SealedEnvironment:
    return dataclasses.replace(sealed, blobs={**sealed.blobs, "web.service": blob})


def test_a_blob_moved_to_another_unit_is_refused(box: Box) -> None:
    sealed = box.box.seal("api", ENVIRONMENTS)
    swapped = {
        "web.service": sealed.blobs["worker.service"],
        "worker.service": sealed.blobs["web.service"],
    }
    with pytest.raises(SecretError, match="another unit or service"):
        box.box.open("api", dataclasses.replace(sealed, blobs=swapped))


def test_one_data_key_per_revision(box: Box) -> None:
    if box.kms is None:
        first = box.box.seal("api", ENVIRONMENTS)
        assert first.encrypted_data_key != box.box.seal("api", ENVIRONMENTS).encrypted_data_key
        return
    counted: list[str] = []
    box.kms.meta.events.register("after-call.kms.*", lambda model, **_: counted.append(model.name))
    sealed = box.box.seal("api", ENVIRONMENTS)
    box.box.open("api", sealed)
    assert counted == ["GenerateDataKey", "Decrypt"]


def test_an_empty_environment_round_trips(box: Box) -> None:
    sealed = box.box.seal("api", {"web.service": {}})
    assert box.box.open("api", sealed) == {"web.service": {}}


@settings(
    max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(
    st.dictionaries(
        st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,12}\Z"),
        st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=40),
        max_size=5,
    )
)
def test_any_variables_round_trip(box: Box, variables: dict[str, str]) -> None:
    sealed = box.box.seal("api", {"web.service": variables})
    assert box.box.open("api", sealed) == {"web.service": variables}


# --- KMS only: the key that sealed it, and botocore's failures at the edge ----------------


def test_kms_refuses_a_data_key_named_under_another_key() -> None:
    with mock_aws():
        kms = boto3.client("kms", region_name="us-east-1")
        first, second = (kms.create_key()["KeyMetadata"]["Arn"] for _ in range(2))
        sealed = KmsSecretBox(kms, first).seal("api", ENVIRONMENTS)
        assert sealed.key_id == first
        with pytest.raises(SecretError, match="another service or key"):
            KmsSecretBox(kms, first).open("api", dataclasses.replace(sealed, key_id=second))


KMS_URL = "https://kms.us-east-1.amazonaws.com"


class _FailingKms:
    """A KMS client whose every call fails with one botocore error."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def generate_data_key(self, **_: Any) -> Any:
        raise self.error

    def decrypt(self, **_: Any) -> Any:
        raise self.error


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "refused"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GenerateDataKey")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_client_error("ThrottlingException", 400), TransientError),
        (_client_error("KMSInternalException", 500), TransientError),
        (_client_error("DependencyTimeoutException", 503), TransientError),
        (
            EndpointConnectionError(endpoint_url=KMS_URL),
            TransientError,
        ),
        (ReadTimeoutError(endpoint_url=KMS_URL), TransientError),
        (_client_error("NotFoundException", 400), ConfigurationError),
        (_client_error("DisabledException", 400), ConfigurationError),
        (NoCredentialsError(), ConfigurationError),
        (NoRegionError(), ConfigurationError),
        (ParamValidationError(report="KeyId is too long"), SecretError),
    ],
)
def test_botocore_failures_become_engine_errors(
    error: Exception, expected: type[FlotillaError]
) -> None:
    box = KmsSecretBox(_FailingKms(error), "alias/flotilla")
    with pytest.raises(expected) as raised:
        box.seal("api", ENVIRONMENTS)
    assert raised.value.retryable is (expected is TransientError)
    assert isinstance(raised.value.__cause__, type(error))
    sealed = SealedEnvironment("arn:aws:kms:us-east-1:1:key/k", b"wrapped", {}, {})
    with pytest.raises(expected):
        box.open("api", sealed)


def _flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]
