"""The demo's closing proof: per instance, what it runs and how its last deploy went, and
what its web server answers when fetched."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from flotilla.cli.demo.web_server import READY
from flotilla.engine.ports import StateStore


@dataclass(frozen=True)
class InstanceSummary:
    instance: str
    revision: str  # label
    last_deploy: str | None
    outcome: str | None
    deploy_seconds: float | None
    resumed: bool  # some deploy of this instance was resumed by a restarted agent
    deploys: int
    http: str  # what its web server answered, or why it could not be fetched

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def summarise(
    store: StateStore,
    service: str,
    instance_ids: list[str],
    announcement: Callable[[str, str], Path],  # (instance, revision id) -> where its port is said
) -> list[InstanceSummary]:
    labels = {r.id: r.label for r in store.list_revisions(service)}
    rows = []
    for instance_id in instance_ids:
        instance = store.get_instance(service, instance_id)
        deploys = store.list_instance_deploys(service, instance_id)
        last = deploys[-1] if deploys else None
        current = instance.current_revision
        rows.append(
            InstanceSummary(
                instance=instance_id,
                revision=labels.get(current or "", "-"),
                last_deploy=last.id if last else None,
                outcome=str(last.outcome) if last and last.outcome else None,
                deploy_seconds=round((last.updated_at - last.created_at).total_seconds(), 2)
                if last
                else None,
                resumed=any(t.resumed for d in deploys for t in d.history),
                deploys=len(deploys),
                http=fetch(announcement(instance_id, current)) if current else "runs nothing",
            )
        )
    return rows


def fetch(announcement: Path) -> str:
    """GET the instance's web server, found through the port it announced at start."""
    try:
        text = announcement.read_text()
    except OSError as exc:
        return f"cannot read {announcement}: {exc.strerror}"
    ports = [line.removeprefix(READY) for line in text.splitlines() if READY in line]
    if not ports:
        return "the server never said it was listening"
    url = f"http://127.0.0.1:{ports[-1].strip()}/"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return str(answer.read().decode().strip())
    except OSError as exc:
        return f"GET {url} failed: {exc}"
