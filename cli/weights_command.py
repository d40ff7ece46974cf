"""`flotilla weights SERVICE REV=W …`: set revision weights in one atomic change.

Revisions are named by label or by a unique id prefix; every name and weight is checked
before the change is written (conditionally, retried on conflict: the engine's
`Operations.set_weights`), so a mistake in any pair changes nothing. This command parses
the pairs, calls the operation and prints the weights it stored.
"""

from __future__ import annotations

from typing import Any

import click

from flotilla.cli.notify import warn_unwoken
from flotilla.cli.options import aws_options, wiring_from
from flotilla.cli.output import output_option, print_json, print_table
from flotilla.engine import validation
from flotilla.engine.errors import ValidationError
from flotilla.engine.operations.names import ID_CHARS, find_service


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
    current = find_service(wiring.store, service, wiring.settings.environment)
    change = wiring.operations.set_weights(current, parsed)
    if change.unwoken is not None:
        warn_unwoken(change.unwoken)
    stored, labels = change.service, change.labels
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
