"""DynamoDB requests judged against the templates' IAM statements, by the rules AWS
documents for the conditions our statements use (moto does not evaluate conditions).

- `dynamodb:LeadingKeys` holds the partition key value(s) a request names: the item's key
  for GetItem/PutItem/UpdateItem/DeleteItem (and for each item of a transaction, judged
  as that action), the hash key value of a Query (the index's, for an index). A Scan
  names none.
- `ForAllValues:<operator>` passes when every value in the request matches at least one
  value of the condition, and also when the request names no value at all (which is why
  no Scan or batch call is granted under one).
- `StringLike` matches case-sensitively with `*` (any run of characters, `/` included)
  and `?` (one character); `StringEquals` exactly.

`RequestRecorder` records the requests a DynamoDB client makes (botocore's
`provide-client-params` event: the parameters as the caller gave them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The partition key attribute of each table (cfn_templates/environment.yaml), and of the
# indexes the agent queries.
HASH_KEYS = {
    "services": "name",
    "revisions": "service",
    "instances": "id",
    "deploys": "id",
    "locks": "name",
    "users": "name",
}
INDEX_HASH_KEYS = {"by-service": "service", "by-instance": "instance_id"}
ITEM_ACTIONS = {"GetItem", "PutItem", "UpdateItem", "DeleteItem"}
TRANSACTION_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem"}


@dataclass(frozen=True)
class Request:
    action: str  # e.g. "dynamodb:UpdateItem"
    resource: str  # the table's (or index's) ARN
    leading_keys: tuple[str, ...]


def like(pattern: str, value: str) -> bool:
    """IAM's StringLike: `*` and `?` are the only special characters."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _condition_holds(condition: Mapping[str, Any] | None, request: Request) -> bool:
    if condition is None:
        return True
    for operator, tests in condition.items():
        for key, values in tests.items():
            if key != "dynamodb:LeadingKeys":
                raise AssertionError(f"this judge knows only LeadingKeys, not {key}")
            patterns = _listed(values)
            if operator == "ForAllValues:StringLike":
                match = like
            elif operator == "ForAllValues:StringEquals":

                def match(pattern: str, value: str) -> bool:
                    return pattern == value

            else:
                raise AssertionError(f"this judge does not know {operator}")
            if not all(any(match(p, v) for p in patterns) for v in request.leading_keys):
                return False
    return True


def allowed(document: Mapping[str, Any], request: Request) -> bool:
    """Whether an identity policy of Allow statements only allows the request."""
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        if request.action not in _listed(statement["Action"]):
            continue
        if not any(like(r, request.resource) for r in _listed(statement["Resource"])):
            continue
        if _condition_holds(statement.get("Condition"), request):
            return True
    return False


def table_of(table_name: str) -> str:
    """`flotilla-<env>-<table>` -> `<table>`."""
    return table_name.rsplit("-", 1)[1]


class RequestRecorder:
    """The DynamoDB requests a client makes while `recording` is true, as `Request`s with
    the table ARNs of `region`/`account`."""

    def __init__(self, client: Any, region: str, account: str) -> None:
        self.requests: list[Request] = []
        self.recording = False
        self._arn = f"arn:aws:dynamodb:{region}:{account}:table/"
        client.meta.events.register("provide-client-params.dynamodb.*", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if self.recording:
            self.requests.extend(self._requests(model.name, params))

    def _requests(self, operation: str, params: Mapping[str, Any]) -> Iterable[Request]:
        if operation == "TransactWriteItems":
            for action in params["TransactItems"]:
                ((kind, body),) = action.items()
                yield from self._requests(TRANSACTION_ACTIONS[kind], body)
            return
        table = params["TableName"]
        resource = self._arn + table
        if operation in ITEM_ACTIONS:
            key = params.get("Key") or params["Item"]
            value = key[HASH_KEYS[table_of(table)]]
            yield Request(f"dynamodb:{operation}", resource, (_plain(value),))
        elif operation == "Query":
            index = params.get("IndexName")
            attribute = INDEX_HASH_KEYS[index] if index else HASH_KEYS[table_of(table)]
            yield Request(
                "dynamodb:Query",
                resource + (f"/index/{index}" if index else ""),
                (_query_hash_value(params, attribute),),
            )
        else:
            yield Request(f"dynamodb:{operation}", resource, ())


def _plain(value: Any) -> str:
    """A key value as the caller gave it: a plain string or an attribute value."""
    if isinstance(value, Mapping):
        return str(value["S"])
    return str(value)


def _query_hash_value(params: Mapping[str, Any], attribute: str) -> str:
    names = {v: k for k, v in params.get("ExpressionAttributeNames", {}).items()}
    for left, placeholder in re.findall(r"([#\w]+)\s*=\s*(:\w+)", params["KeyConditionExpression"]):
        if names.get(attribute) == left or left == attribute:
            return _plain(params["ExpressionAttributeValues"][placeholder])
    raise AssertionError(f"no condition on {attribute}: {params['KeyConditionExpression']}")
