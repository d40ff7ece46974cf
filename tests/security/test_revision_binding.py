"""A sealed environment is bound to its revision (issue 14; adapters/secrets.py).

Both layers are tested: the KMS encryption context (moto honours it on Decrypt: a data key
generated under one context does not decrypt under another, checked here directly) and the
AEAD associated data (checked with the local box, whose wrapping is itself AEAD, and with
KMS's data key opened under the right context but the blobs under another binding).
A spliced environment (revision A's sealed environment in revision B's item) fails to open;
an environment sealed before the binding (scheme 1) still opens; the scheme cannot be
flipped either way.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from flotilla.adapters import secrets
from flotilla.adapters.items.revisions import revision_from_item, revision_to_item
from flotilla.adapters.secrets import (
    CONTEXT_KEY,
    LABEL_KEY,
    UNITS_KEY,
    KmsSecretBox,
    LocalSecretBox,
)
from flotilla.engine import units
from flotilla.engine.checkpoint import Outcome
from flotilla.engine.errors import SecretError
from flotilla.engine.ports import SecretBox
from flotilla.engine.records import Revision
from flotilla.engine.revisions import binding_for, build_revision, revision_id, units_digest
from tests.support.cluster import SLEEPER, Cluster

WHEN = datetime(2026, 1, 1, tzinfo=UTC)
UNITS = {"web.service": "[Service]\nExecStart=/bin/true\n"}
OTHER_UNITS = {"web.service": "[Service]\nExecStart=/bin/false\n"}
OLD = {"web.service": {"DB_PASSWORD": "old-password"}}
NEW = {"web.service": {"DB_PASSWORD": "new-password"}}


class RecordingKms:
    """A KMS client that remembers the encryption context of every call."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.contexts: list[dict[str, str]] = []

    def generate_data_key(self, **kwargs: Any) -> Any:
        self.contexts.append(kwargs["EncryptionContext"])
        return self.client.generate_data_key(**kwargs)

    def decrypt(self, **kwargs: Any) -> Any:
        self.contexts.append(kwargs["EncryptionContext"])
        return self.client.decrypt(**kwargs)


@pytest.fixture(params=["local", "kms"])
def box(request: pytest.FixtureRequest) -> Iterator[SecretBox]:
    if request.param == "local":
        yield LocalSecretBox(os.urandom(32))
        return
    with mock_aws():
        kms = boto3.client("kms", region_name="us-east-1")
        yield KmsSecretBox(kms, kms.create_key()["KeyMetadata"]["Arn"])


def spliced(into: Revision, source: Revision) -> Revision:
    """`into` with `source`'s sealed environment, under the id that content hashes to (an
    attacker able to write revision items gets the id check to pass this way)."""
    moved = dataclasses.replace(into, environment=source.environment)
    return dataclasses.replace(moved, id=revision_id(moved.service, moved.units, moved.environment))


def open_in(box: SecretBox, revision: Revision) -> dict[str, dict[str, str]]:
    assert revision.environment is not None
    return box.open(revision.service, revision.environment, binding_for(revision))


def test_a_revision_opens_in_itself(box: SecretBox) -> None:
    revision = build_revision("api", "v1", UNITS, OLD, box, WHEN)
    assert revision.environment is not None
    assert revision.environment.scheme == 2
    assert open_in(box, revision) == OLD


@pytest.mark.parametrize("differs", ["label", "units", "both"])
def test_a_spliced_environment_fails_to_open(box: SecretBox, differs: str) -> None:
    old = build_revision("api", "v1", UNITS, OLD, box, WHEN)
    new = build_revision(
        "api",
        "v1" if differs == "units" else "v2",
        UNITS if differs == "label" else OTHER_UNITS,
        NEW,
        box,
        WHEN,
    )
    with pytest.raises(SecretError, match=r"does not open|refused"):
        open_in(box, spliced(new, old))


def test_the_kms_encryption_context_names_service_label_and_units() -> None:
    with mock_aws():
        kms = RecordingKms(boto3.client("kms", region_name="us-east-1"))
        box = KmsSecretBox(kms, kms.client.create_key()["KeyMetadata"]["Arn"])
        revision = build_revision("api", "v7", UNITS, OLD, box, WHEN)
        open_in(box, revision)
    expected = {CONTEXT_KEY: "api", LABEL_KEY: "v7", UNITS_KEY: units_digest("api", UNITS)}
    assert kms.contexts == [expected, expected]  # GenerateDataKey, then Decrypt (CloudTrail)


def test_kms_itself_refuses_the_data_key_under_another_revisions_context() -> None:
    """The KMS layer alone: moto checks the encryption context on Decrypt, as KMS does."""
    with mock_aws():
        kms = boto3.client("kms", region_name="us-east-1")
        box = KmsSecretBox(kms, kms.create_key()["KeyMetadata"]["Arn"])
        old = build_revision("api", "v1", UNITS, OLD, box, WHEN)
        new = build_revision("api", "v2", UNITS, NEW, box, WHEN)
        assert old.environment is not None
        with pytest.raises(SecretError, match=r"KMS refused it.*InvalidCiphertextException"):
            box.open("api", old.environment, binding_for(new))


def test_the_aead_alone_refuses_blobs_spliced_under_a_genuine_data_key() -> None:
    """The AEAD layer alone: B's own wrapped data key (which opens for B) with blobs sealed
    under that very key but bound to A (what someone holding B's plaintext data key could
    make): the data key opens, the blobs do not."""
    master = os.urandom(32)
    box = LocalSecretBox(master)
    a = build_revision("api", "v1", UNITS, OLD, box, WHEN)
    b = build_revision("api", "v2", UNITS, NEW, box, WHEN)
    assert a.environment is not None
    assert b.environment is not None
    wrapped = b.environment.encrypted_data_key
    data_key = secrets.AESGCM(master).decrypt(
        wrapped[:12], wrapped[12:], secrets._context("api", binding_for(b))
    )
    resealed = secrets._seal_with(data_key, wrapped, "local", "api", OLD, binding_for(a))
    forged = dataclasses.replace(b, environment=resealed)
    with pytest.raises(SecretError, match=r"web.service does not open.*revision 'v2'"):
        open_in(box, forged)


def test_an_environment_sealed_before_the_binding_still_opens(box: SecretBox) -> None:
    legacy_env = box.seal("api", OLD)  # scheme 1: how revisions were sealed before
    assert legacy_env.scheme == 1
    legacy = Revision(
        "api", revision_id("api", UNITS, legacy_env), "v0", dict(UNITS), legacy_env, WHEN
    )
    item = revision_to_item(legacy)
    assert item["schema"] == 1  # what older agents read
    assert "scheme" not in item["environment"]
    read = revision_from_item(item)
    assert read == legacy
    assert open_in(box, read) == OLD


def test_the_scheme_cannot_be_flipped(box: SecretBox) -> None:
    bound = build_revision("api", "v1", UNITS, OLD, box, WHEN)
    assert bound.environment is not None
    item = revision_to_item(bound)
    assert item["schema"] == 2  # older agents refuse it clearly (a newer schema)
    assert revision_from_item(item) == bound
    as_legacy = dataclasses.replace(bound.environment, scheme=1)
    with pytest.raises(SecretError):
        box.open("api", as_legacy, binding_for(bound))
    legacy_env = box.seal("api", OLD)
    with pytest.raises(SecretError):
        box.open("api", dataclasses.replace(legacy_env, scheme=2), binding_for(bound))
    # and the scheme is part of the id: flipping it in a stored item breaks the id check
    assert revision_id("api", UNITS, as_legacy) != bound.id


def test_a_bound_environment_needs_its_revision_to_open(box: SecretBox) -> None:
    bound = build_revision("api", "v1", UNITS, OLD, box, WHEN)
    assert bound.environment is not None
    with pytest.raises(SecretError, match="no revision was given"):
        box.open("api", bound.environment)


def test_an_agent_given_a_spliced_revision_installs_nothing(cluster: Cluster) -> None:
    """The whole path: a revision item carrying another revision's sealed environment,
    under an id that matches its content, fails (at `locking`, where the deploy opens both
    environments to decide which units change) before any file is written."""
    old = cluster.revision("v1", env={"COLOR": "crimson-7731"})
    new = build_revision(
        "api",
        "v2",
        {"app.service": SLEEPER.replace("600", "601")},
        {"app.service": {"COLOR": "blue"}},
        cluster.secrets,
        cluster.clock.now(),
    )
    forged = cluster.store.put_revision(spliced(new, old))
    cluster.instance("i-1")
    cluster.assign("i-1", old)
    cluster.deploy("i-1")
    cluster.assign("i-1", forged)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.ROLLED_BACK
    assert done.error is not None
    assert "does not open" in done.error
    assert "crimson-7731" not in done.error
    owned = cluster.runtime("i-1").owned_units()
    assert owned == [units.installed_name("app.service", old.id)]
    assert not any(forged.id[:12] in p.name for p in cluster.root.rglob("*"))
