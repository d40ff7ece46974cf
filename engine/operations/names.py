"""The names an operator gives: a service, and a revision by label or id prefix.

The rule for naming a revision, in this order (`find_revision`):

1. its whole id (64 hex digits);
2. its exact label: a label always names its own revision, even when it also reads as
   the start of another revision's id (`b` beside an id `b221…`, build numbers `1`-`12`
   beside ids starting with digits), so `flotilla weights api $BUILD=100` never breaks;
3. a prefix of its id, if only one id starts with it.

So a label can never become ambiguous, and `new_label` (run by `revision add`) refuses
only what would break that: a label another revision of the service already has, and a
label of 64 hex digits (it would read as a whole id, which comes first). A label that is
also a prefix of another revision's id is accepted: that revision is still named by a
longer prefix, its whole id or its own label.

People see a revision by its label, or by its first `ID_CHARS` characters when it has
none; weights read `v1=90, v2=10`. The errors say where the operator looked and what to
run next, because they end up as the CLI's one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from flotilla.engine import validation
from flotilla.engine.errors import NotFoundError, ValidationError
from flotilla.engine.ports import StateStore
from flotilla.engine.records import Revision, Service

ID_CHARS = 12  # how much of an id people are shown; any unique prefix names a revision
_WHOLE_ID = re.compile(r"[0-9a-fA-F]{64}")
_SHOWN_ID = re.compile(rf"\b[0-9a-f]{{{ID_CHARS}}}\b")  # an id as texts show it


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
    """The one revision of `revisions` that `name` names: its whole id, else its exact
    label, else a unique id prefix (the module's rule)."""
    exact = [r for r in revisions if r.id == name.lower()]
    if exact:
        return exact[0]
    by_label = [r for r in revisions if r.label == name]
    if len(by_label) == 1:
        return by_label[0]
    if len(by_label) > 1:  # stored before labels were kept unique; only ids tell them apart
        raise ValidationError(
            f"{len(by_label)} revisions of {service!r} are labelled {name[:70]!r} "
            f"({_listed(by_label)}); name one by a longer id prefix"
        )
    by_prefix = [r for r in revisions if r.id.startswith(name.lower())] if name else []
    if len(by_prefix) == 1:
        return by_prefix[0]
    if not by_prefix:
        raise ValidationError(
            f"service {service!r} has no revision labelled {name[:70]!r} or with an id "
            f"starting with it; see `flotilla revision list {service}`"
        )
    raise ValidationError(
        f"{name[:70]!r} is the start of the ids of {len(by_prefix)} revisions of {service!r} "
        f"({_listed(by_prefix)}); give a longer id prefix or a label"
    )


def new_label(revisions: Sequence[Revision], label: str, service: str) -> str:
    """`label` if a new revision of `service` may carry it (the module's rule), else a
    ValidationError that says why and what to do."""
    taken = [r for r in revisions if r.label == label]
    if taken:
        raise ValidationError(
            f"service {service!r} already has a revision labelled {label!r} "
            f"({taken[0].id[:ID_CHARS]}); labels name one revision each, choose another --label"
        )
    if _WHOLE_ID.fullmatch(label):
        raise ValidationError(
            f"invalid revision label {label[:16]!r}...: 64 hex digits read as a whole revision "
            "id, which is looked up before labels; choose a shorter --label"
        )
    return label


def _listed(revisions: Sequence[Revision]) -> str:
    return ", ".join(f"{r.id[:ID_CHARS]} ({r.label})" for r in revisions)


def label_of(labels: Mapping[str, str], revision: str | None) -> str | None:
    """How a person sees `revision`: its label, or its id's first characters."""
    if revision is None:
        return None
    return labels.get(revision) or revision[:ID_CHARS]


def weights_text(weights: Mapping[str, int], labels: Mapping[str, str]) -> str:
    """`v1=90, v2=10`, sorted by label; `-` for no weights."""
    shown = sorted((label_of(labels, rev) or "", w) for rev, w in weights.items())
    return ", ".join(f"{name}={w}" for name, w in shown) or "-"


def with_labels(text: str, labels: Mapping[str, str]) -> str:
    """`text` with each revision id shown in it (its first `ID_CHARS` characters, as the
    scheduler writes them into the service history) replaced by the revision's label."""
    by_prefix = {revision[:ID_CHARS]: label for revision, label in labels.items() if label}
    return _SHOWN_ID.sub(lambda found: by_prefix.get(found.group(0), found.group(0)), text)
