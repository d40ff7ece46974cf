"""The names an operator gives: a service, and a revision by label or id prefix.

A revision is named by its exact id, its label, or a unique prefix of its id; a label
that is also a prefix of another revision's id names two and is refused as ambiguous.
People see a revision by its label, or by its first `ID_CHARS` characters when it has
none; weights read `v1=90, v2=10`. The errors say where the operator looked and what to
run next, because they end up as the CLI's one line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from flotilla.engine import validation
from flotilla.engine.errors import NotFoundError, ValidationError
from flotilla.engine.ports import StateStore
from flotilla.engine.records import Revision, Service

ID_CHARS = 12  # how much of an id people are shown; any unique prefix names a revision


def find_service(store: StateStore, name: str, environment: str) -> Service:
    """The stored service `name` (checked for shape first), or a NotFoundError that says
    in which environment it was looked for and how to find or create one."""
    try:
        return store.get_service(validation.service_name(name))
    except NotFoundError as exc:
        raise NotFoundError(
            f"service {name!r} does not exist in environment {environment!r}; "
            "see `flotilla service list`, or create it with `flotilla service create`"
        ) from exc


def find_revision(revisions: Sequence[Revision], name: str, service: str) -> Revision:
    """The one revision of `revisions` that `name` names: an exact id, a label, or a
    unique id prefix."""
    exact = [r for r in revisions if r.id == name]
    if exact:
        return exact[0]
    # A label that is also a prefix of another revision's id is ambiguous, not a label.
    by_label = [r for r in revisions if r.label == name]
    by_prefix = [r for r in revisions if r.id.startswith(name.lower())] if name else []
    matches = {r.id: r for r in by_label + by_prefix}
    if len(matches) == 1:
        return next(iter(matches.values()))
    if not matches:
        raise ValidationError(
            f"service {service!r} has no revision labelled {name[:70]!r} or with an id "
            f"starting with it; see `flotilla revision list {service}`"
        )
    listed = ", ".join(f"{r.id[:ID_CHARS]} ({r.label})" for r in matches.values())
    raise ValidationError(
        f"{name[:70]!r} names more than one revision of {service!r} ({listed}); "
        "give a longer id prefix"
    )


def label_of(labels: Mapping[str, str], revision: str | None) -> str | None:
    """How a person sees `revision`: its label, or its id's first characters."""
    if revision is None:
        return None
    return labels.get(revision) or revision[:ID_CHARS]


def weights_text(weights: Mapping[str, int], labels: Mapping[str, str]) -> str:
    """`v1=90, v2=10`, sorted by label; `-` for no weights."""
    shown = sorted((label_of(labels, rev) or "", w) for rev, w in weights.items())
    return ", ".join(f"{name}={w}" for name, w in shown) or "-"
