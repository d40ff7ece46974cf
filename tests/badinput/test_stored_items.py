"""Items written by "another version": a higher schema, missing fields, wrong types.

Each example corrupts one stored item (service, revision, instance, deploy, user) the way
a newer or older flotilla, or a hand edit, could have written it, then runs every
command that reads it, and the reads an agent makes. Each must either work or fail in
one clear line with exit 1 (SchemaError and friends), never a traceback, and nothing may
be written over the item: a full scan of every table is compared before and after.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from flotilla.adapters import items as codecs
from flotilla.engine.errors import FlotillaError
from tests.badinput.harness import World, assert_clean_failure, make_world

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Attribute = dict[str, Any]  # one DynamoDB attribute value, e.g. {"S": "x"}

KEYS = {
    "services": ("name",),
    "revisions": ("service", "id"),
    "instances": ("id",),
    "deploys": ("id",),
    "users": ("name",),
}

# Commands that read each kind of item; the last ones of a list also write.
READERS: dict[str, list[list[str]]] = {
    "services": [
        ["service", "show", "api"],
        ["service", "show", "api", "-o", "json"],
        ["service", "list"],
        ["rollout", "status", "api"],
        ["rollout", "status", "api", "-o", "json"],
        ["history", "api"],
        ["trace", "rollout", "api"],
        ["revision", "list", "api"],
    ],
    "revisions": [
        ["revision", "list", "api"],
        ["revision", "show", "api", "v1", "--units"],
        ["rollout", "status", "api"],
        ["history", "api", "-o", "json"],
        ["trace", "rollout", "api", "--revision", "v1"],
    ],
    "instances": [["rollout", "status", "api"], ["rollout", "status", "api", "-o", "json"]],
    "deploys": [
        ["history", "api"],
        ["history", "api", "-o", "json"],
        ["trace", "rollout", "api"],
        ["trace", "deploy", "i-1.1"],
        ["rollout", "status", "api"],
    ],
    "users": [["user", "list"], ["user", "list", "-o", "json"], ["keys"], ["keys", "alice"]],
}
WRITERS: dict[str, list[list[str]]] = {
    "services": [["weights", "api", "v1=90"], ["rollout", "pause", "api"]],
    "revisions": [["weights", "api", "v1=90"]],
    "instances": [],
    "deploys": [],
    "users": [["user", "deactivate", "alice"]],
}


def _agent_reads(world: World) -> dict[str, Callable[[], object]]:
    """What an agent (and the scheduler) read from the store, by item kind."""
    wiring = world.wiring()
    store, users = wiring.store, wiring.users
    return {
        "services": lambda: (store.get_service("api"), store.list_services()),
        "revisions": lambda: (
            store.get_revision("api", world.revision_id),
            store.list_revisions("api"),
        ),
        "instances": lambda: (store.get_instance("api", "i-1"), store.list_instances("api")),
        "deploys": lambda: (
            store.get_deploy("i-1.1"),
            store.list_instance_deploys("api", "i-1"),
            store.list_deploys("api"),
        ),
        "users": lambda: (users.get_user("alice"), users.list_users()),
    }


def public_key() -> str:
    key = Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode() + " alice@laptop\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    world = make_world("corrupt", tmp_path_factory.mktemp("corrupt"))
    world.ok("user", "add", "alice", "--key", "-", "--service", "api", stdin=public_key().encode())
    return world


@pytest.fixture(scope="module")
def originals(world: World) -> dict[str, Attribute]:
    """The raw attribute map of the one item of each kind, as DynamoDB holds it."""
    found = {}
    for kind, items in world.scan().items():
        short = kind.rsplit("-", 1)[-1]
        if short in KEYS:
            assert len(items) == 1, (kind, items)
            found[short] = items[0]
    return found


@pytest.fixture
def restore(world: World, originals: dict[str, Attribute]) -> Iterator[None]:
    yield
    put_all(world, originals)


def put_all(world: World, items: dict[str, Attribute]) -> None:
    client = world.dynamodb()
    for kind, item in items.items():
        client.put_item(TableName=getattr(world.tables, kind), Item=item)


def test_the_backend_snapshot_is_the_scan(world: World) -> None:
    """The fast snapshot (moto's backend) sees exactly the items a Scan returns."""
    scanned = world.scan()
    assert {t: len(items) for t, items in world.snapshot().items()} == {
        t: len(items) for t, items in scanned.items()
    }


# --- mutations -------------------------------------------------------------------------

# Numbers a newer version might write, epoch milliseconds out of datetime's range included.
numbers = st.sampled_from(
    ["0", "1", "-1", "1.5", "2", "99", "1000000000000000", "-3.25", str(10**20)]
)
strings = st.one_of(
    st.sampled_from(["", "x", "rolling", "done", "failed", "zzz", "1", "-1", "true", "{}"]),
    st.text(max_size=12),
)
scalars = st.one_of(
    strings.map(lambda s: {"S": s}),
    numbers.map(lambda n: {"N": n}),
    st.binary(max_size=8).map(lambda b: {"B": b}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.just({"SS": ["a", "b"]}),
    st.just({"NS": ["1", "2"]}),
)
attributes = st.one_of(
    scalars,
    st.lists(scalars, max_size=3).map(lambda items: {"L": items}),
    st.dictionaries(
        st.sampled_from(["a", "name", "kind", "weights", "x"]), scalars, max_size=3
    ).map(lambda fields: {"M": fields}),
)


def paths(value: Attribute, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every attribute path inside a map or list attribute value."""
    found: list[tuple[str | int, ...]] = []
    if "M" in value:
        for key, inner in value["M"].items():
            found.append((*prefix, key))
            found += paths(inner, (*prefix, key))
    elif "L" in value:
        for index, inner in enumerate(value["L"]):
            found.append((*prefix, index))
            found += paths(inner, (*prefix, index))
    return found


def item_paths(kind: str, item: Attribute) -> list[tuple[str | int, ...]]:
    return [p for p in paths({"M": item}) if p[0] not in KEYS[kind]]


def mutate(item: Attribute, path: tuple[str | int, ...], new: Attribute | None) -> Attribute:
    """The item with the value at `path` replaced by `new`, or removed when `new` is None."""
    changed = copy.deepcopy(item)
    parent: Any = {"M": changed}
    for step in path[:-1]:
        parent = parent["M"][step] if "M" in parent else parent["L"][step]
    container = parent["M"] if "M" in parent else parent["L"]
    if new is None:
        del container[path[-1]]
    else:
        container[path[-1]] = new
    return changed


def value_at(item: Attribute, path: tuple[str | int, ...]) -> Attribute:
    value: Any = {"M": item}
    for step in path:
        value = value["M"][step] if "M" in value else value["L"][step]
    result: Attribute = value
    return result


# --- the checks --------------------------------------------------------------------------


def check_every_reader(world: World, kind: str) -> list[str]:
    """Run every reader of `kind`; each works or fails cleanly, and nothing is written."""
    before = world.snapshot()
    failures = []
    for args in READERS[kind]:
        result = world.run(*args)
        if result.code != 0 or result.exception is not None:
            # 1 for an unreadable item; 2 when an argument no longer names anything (a
            # revision whose label was overwritten is not "v1" any more).
            assert_clean_failure(result, codes=(1, 2))
            failures.append(result.lines[-1])
    for read in _agent_reads(world).values():
        try:
            read()
        except FlotillaError as failed:
            failures.append(failed.message)
    assert world.snapshot() == before, "reading a malformed item changed stored state"
    for args in WRITERS[kind]:
        result = world.run(*args)
        if result.code != 0 or result.exception is not None:
            # Exit 2 happens when the item reads but its content fails validation on the
            # way back (e.g. a user's ssh_keys stored as one string): reported, see README.
            assert_clean_failure(result, codes=(1, 2))
            assert world.snapshot() == before, f"a refused {args} changed stored state"
        else:
            before = world.snapshot()  # it could read the item, so it may write it
    return failures


@pytest.mark.parametrize("kind", sorted(KEYS))
@EXAMPLES
@given(data=st.data())
def test_items_with_wrong_types_are_read_or_refused_cleanly(
    world: World, originals: dict[str, Attribute], restore: None, kind: str, data: st.DataObject
) -> None:
    original = originals[kind]
    path = data.draw(st.sampled_from(item_paths(kind, original)), label="path")
    new = data.draw(st.none() | attributes, label="new value (None: removed)")
    if new is not None and "N" in new and "B" in value_at(original, path):
        reject()  # bytes(<number>) allocates that many bytes: the bug pinned below
    put_all(world, originals)
    try:
        put_all(world, {kind: mutate(original, path, new)})
    except ClientError as refused:
        # DynamoDB itself refuses a wrong type in an index key (e.g. `service`).
        if refused.response["Error"]["Code"] != "ValidationException":
            raise
        reject()
    try:
        check_every_reader(world, kind)
    finally:
        put_all(world, originals)


@pytest.mark.parametrize("kind", sorted(KEYS))
@pytest.mark.parametrize("newer", [1, 10**9])
def test_items_of_a_newer_schema_are_refused(
    world: World, originals: dict[str, Attribute], restore: None, kind: str, newer: int
) -> None:
    # Newer than what this flotilla reads. Some records are written below their kind's
    # newest schema when they need nothing of it (a service not being deleted, a revision
    # without hooks: adapters/items), so older readers still read them.
    newest = {
        "deploys": codecs.DEPLOY_SCHEMA,
        "instances": codecs.INSTANCE_SCHEMA,
        "revisions": codecs.REVISION_SCHEMA,
        "services": codecs.SERVICE_SCHEMA,
        "users": codecs.USER_SCHEMA,
    }[kind]
    schema = max(int(originals[kind]["schema"]["N"]), newest) + newer
    put_all(world, {kind: {**originals[kind], "schema": {"N": str(schema)}}})
    try:
        failures = check_every_reader(world, kind)
        assert failures, "an item of a newer schema was read as if it were this one's"
        assert all("upgrade flotilla" in line for line in failures), failures
    finally:
        put_all(world, originals)


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_items_without_a_schema_are_refused(
    world: World, originals: dict[str, Attribute], restore: None, kind: str
) -> None:
    put_all(world, {kind: {k: v for k, v in originals[kind].items() if k != "schema"}})
    failures = check_every_reader(world, kind)
    assert failures
    assert all("schema" in line for line in failures), failures


def test_an_unknown_deploy_state_from_a_newer_machine_is_shown_or_refused(
    world: World, originals: dict[str, Attribute], restore: None
) -> None:
    deploy = copy.deepcopy(originals["deploys"])
    deploy["state"] = {"S": "quiescing"}
    deploy["machine_version"] = {"N": "99"}
    deploy["history"]["L"][0]["M"]["state"] = {"S": "quiescing"}
    deploy["outcome"] = {"S": "partially_succeeded"}
    put_all(world, {"deploys": deploy})
    check_every_reader(world, "deploys")


@pytest.mark.parametrize("field", ["created_ms", "updated_ms"])
def test_enormous_timestamps_fail_cleanly(
    world: World, originals: dict[str, Attribute], restore: None, field: str
) -> None:
    put_all(world, {"deploys": {**originals["deploys"], field: {"N": str(10**20)}}})
    check_every_reader(world, "deploys")


@pytest.mark.parametrize("field", ["nonce", "ciphertext"])
def test_a_number_where_bytes_belong_is_refused(
    world: World, originals: dict[str, Attribute], restore: None, field: str
) -> None:
    revision = mutate(
        originals["revisions"], ("environment", "blobs", "web.service", field), {"N": str(10**15)}
    )
    put_all(world, {"revisions": revision})
    failures = check_every_reader(world, "revisions")
    assert failures, "a number where bytes belong was read without an error"
    assert all("malformed" in line for line in failures), failures


def test_the_corrupt_items_never_reach_the_output_as_json_garbage(
    world: World, originals: dict[str, Attribute], restore: None
) -> None:
    """JSON output stays JSON when a field has a surprising (but readable) type."""
    service = copy.deepcopy(originals["services"])
    service["drain_timeout_seconds"] = {"N": "1.5"}
    put_all(world, {"services": service})
    result = world.run("service", "show", "api", "-o", "json")
    if result.code == 0:
        json.loads(result.stdout)
    else:
        assert_clean_failure(result, codes=(1,))
