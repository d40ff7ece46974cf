"""moto's server, with each DynamoDB request applied atomically, as DynamoDB applies it.

Run as `python -m flotilla.cli.demo.atomic_moto -H HOST -p PORT` (moto.server's options).

moto's server is threaded, and its DynamoDB checks a request's condition and applies its
update in separate steps on the live item, under no lock. Two requests on one item can
interleave: an update's `if_not_exists(v, :zero)` resolved before another request's
`SET v = :next` lands is then written back over it, and two conditional writes made from
the same version can both pass. DynamoDB applies every request to an item atomically, and
Flotilla's fencing (versioned assignments, leases, checkpoints) rests on that. So here one
lock serializes moto's DynamoDB requests: each is short, and nothing else waits on it (an
SQS long poll, which blocks, is another service's handler).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

_DYNAMODB = threading.Lock()


def serialize_dynamodb() -> None:
    """Make every DynamoDB request of this process's moto wait for the one before it."""
    from moto.dynamodb.responses import DynamoHandler

    unlocked = getattr(DynamoHandler, "call_action", None)
    if unlocked is None:  # moto's internals moved: refuse to serve a racy DynamoDB
        raise SystemExit(
            "atomic_moto: this moto has no DynamoHandler.call_action to serialize; "
            "pin moto to a version that does (setup.cfg) or adapt cli/demo/atomic_moto.py"
        )

    def call_action(self: DynamoHandler) -> Any:
        with _DYNAMODB:
            return unlocked(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    import moto.server

    serialize_dynamodb()
    moto.server.main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
