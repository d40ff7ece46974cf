"""Records to stored items and back, one module per kind of record.

Every store adapter (DynamoDB, memory) and the SQS queue keep the same items through
these codecs; the names are gathered here so a store imports one thing.
"""

from flotilla.adapters.items.common import (
    MAX_ITEM_BYTES,
    Item,
    RefusalWarnings,
    check_item_size,
    decode_listed,
    item_size,
)
from flotilla.adapters.items.deploys import (
    BRIEF_ATTRIBUTES,
    DEPLOY_SCHEMA,
    deploy_from_item,
    deploy_to_item,
)
from flotilla.adapters.items.events import (
    EVENT_SCHEMA,
    MAX_EVENT_BYTES,
    event_from_json,
    event_to_json,
)
from flotilla.adapters.items.instances import INSTANCE_SCHEMA, instance_from_item, instance_to_item
from flotilla.adapters.items.revisions import (
    REVISION_SCHEMA,
    describe_revision,
    revision_from_item,
    revision_to_item,
)
from flotilla.adapters.items.services import SERVICE_SCHEMA, service_from_item, service_to_item
from flotilla.adapters.items.users import USER_SCHEMA, user_from_item, user_to_item

__all__ = [
    "BRIEF_ATTRIBUTES",
    "DEPLOY_SCHEMA",
    "EVENT_SCHEMA",
    "INSTANCE_SCHEMA",
    "MAX_EVENT_BYTES",
    "MAX_ITEM_BYTES",
    "REVISION_SCHEMA",
    "SERVICE_SCHEMA",
    "USER_SCHEMA",
    "Item",
    "RefusalWarnings",
    "check_item_size",
    "decode_listed",
    "deploy_from_item",
    "deploy_to_item",
    "describe_revision",
    "event_from_json",
    "event_to_json",
    "instance_from_item",
    "instance_to_item",
    "item_size",
    "revision_from_item",
    "revision_to_item",
    "service_from_item",
    "service_to_item",
    "user_from_item",
    "user_to_item",
]
