"""`flotilla weights SERVICE REV=W …`: set revision weights in one atomic change.

Revisions are named by label or by a unique id prefix; every name and weight is checked
before the change is written (conditionally, retried on conflict by engine.updates), so
a mistake in any pair changes nothing.
"""

from __future__ import annotations

from typing import Any

import click

from flotilla.cli.notify import notify_scheduler
from flotilla.cli.options import aws_options
from flotilla.cli.output import output_option, print_json, print_table
from flotilla.cli.revision_commands import ID_CHARS, resolve_revision
from flotilla.cli.service_commands import existing_service, wiring_from
from flotilla.engine import validation
from flotilla.engine.errors import ValidationError
from flotilla.engine.updates import set_weights


def parse_pairs(pairs: tuple[str, ...]) -> list[tuple[str, int]]:
    if not pairs:
        raise ValidationError("give at least one REVISION=WEIGHT, e.g. v1=90 v2=10")
    parsed = []
    for pair in pairs:
        name, equals, weight = pair.partition("=")
        if not equals or not name:
            raise ValidationError(
                f"invalid {pair[:70]!r}: write REVISION=WEIGHT, e.g. v2=10 (a label or id prefix)"
            )
        parsed.append((name, validation.weight(name, weight)))
    return parsed


@click.command()
@click.argument("service")
@click.argument("pairs", nargs=-1, metavar="REVISION=WEIGHT...")
@output_option
@aws_options
def weights(service: str, pairs: tuple[str, ...], output: str, **options: Any) -> None:
    """Set the weights of SERVICE's revisions, e.g. `flotilla weights api v1=90 v2=10`.

    A revision is named by its label or a unique prefix of its id. Revisions not named
    keep their weights; weight 0 takes a revision out of the rollout.
    """
    validation.service_name(service)
    parsed = parse_pairs(pairs)
    wiring = wiring_from(options)
    store = wiring.store
    current = existing_service(store, service, wiring)
    revisions = store.list_revisions(service)
    chosen: dict[str, int] = {}
    for name, weight in parsed:
        found = resolve_revision(revisions, name, service)
        if found.id in chosen:
            raise ValidationError(f"revision {found.id[:ID_CHARS]} ({found.label}) is named twice")
        chosen[found.id] = weight
    stored = set_weights(store, service, chosen, current=current)
    if stored.version != current.version:
        notify_scheduler(wiring, service)
    labels = {r.id: r.label for r in revisions}
    if output == "json":
        print_json(
            {
                "service": service,
                "version": stored.version,
                "weights": [
                    {"id": rev, "label": labels.get(rev), "weight": w}
                    for rev, w in sorted(stored.weights.items())
                ],
            }
        )
        return
    print_table(
        ["ID", "LABEL", "WEIGHT"],
        [[rev[:ID_CHARS], labels.get(rev, "?"), w] for rev, w in sorted(stored.weights.items())],
    )
