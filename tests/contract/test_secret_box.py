"""The secret box contract, for KMS (on moto) and the local master key alike."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from flotilla.adapters.secrets import KmsSecretBox, LocalSecretBox
from flotilla.engine.errors import SecretError
from flotilla.engine.ports import SecretBox
from flotilla.engine.records import SealedBlob

ENVIRONMENTS = {
    "web.service": {"DB_PASSWORD": "s3cr3t", "GREETING": "hello, world"},
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
    web_only = box.box.seal("api", {"web.service": ENVIRONMENTS["web.service"]})
    assert box.box.open("api", web_only) == {"web.service": ENVIRONMENTS["web.service"]}


def test_another_service_cannot_open_it(box: Box) -> None:
    sealed = box.box.seal("api", ENVIRONMENTS)
    with pytest.raises(SecretError, match="'billing'"):
        box.box.open("billing", sealed)


@pytest.mark.parametrize("part", ["ciphertext", "nonce", "data key"])
def test_a_flipped_byte_anywhere_is_refused(box: Box, part: str) -> None:
    sealed = box.box.seal("api", ENVIRONMENTS)
    blob = sealed.blobs["web.service"]
    if part == "ciphertext":
        blobs = {**sealed.blobs, "web.service": SealedBlob(blob.nonce, _flip(blob.ciphertext))}
        sealed = dataclasses.replace(sealed, blobs=blobs)
    elif part == "nonce":
        blobs = {**sealed.blobs, "web.service": SealedBlob(_flip(blob.nonce), blob.ciphertext)}
        sealed = dataclasses.replace(sealed, blobs=blobs)
    else:
        sealed = dataclasses.replace(sealed, encrypted_data_key=_flip(sealed.encrypted_data_key))
    with pytest.raises(SecretError):
        box.box.open("api", sealed)


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


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x01]) + data[1:]
