"""The few revisions an agent read last, kept between its deploys.

Revisions never change once stored, and each is checked against its id before it is
kept, so a kept one is as good as a fresh read: a deploy's old revision is nearly always
the one its predecessor deployed, and a rollback's the one it just stopped. A handful is
enough; the oldest goes first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from flotilla.engine.records import Revision

Key = tuple[str, str]  # (service, revision id)


class RevisionCache:
    def __init__(self, limit: int = 4) -> None:
        self._limit = limit
        self._kept: OrderedDict[Key, Revision] = OrderedDict()
        self._mutex = threading.Lock()

    def get(self, key: Key) -> Revision | None:
        with self._mutex:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
            return found

    def put(self, key: Key, revision: Revision) -> None:
        with self._mutex:
            self._kept[key] = revision
            self._kept.move_to_end(key)
            while len(self._kept) > self._limit:
                self._kept.popitem(last=False)
