"""`flotilla weights SERVICE REV=W …`: set revision weights in one atomic change.

Revisions are named by their whole id, their exact label, or a unique id prefix, in that
order (`engine.operations.names`); every name and weight is checked before the change is
written (conditionally, retried on conflict: the engine's `Operations.set_weights`), so a
mistake in any pair changes nothing. Weights that are all 0 run nothing anywhere and are
refused unless `--stop-all` says that is the point. This command parses the pairs, calls
the operation, prints the weights it stored and, with `--wait`, follows the rollout they
start (`cli.follow`).
"""

from __future__ import annotations

from typing import Any

import click

from flotilla.cli.follow import wait_options, watch_rollout
from flotilla.cli.notify import warn_unwoken
from flotilla.cli.options import Seconds, aws_options, wiring_from
from flotilla.cli.output import output_option, print_json, print_json_line, print_table
from flotilla.cli.regional_weights import set_everywhere
from flotilla.cli.regions import in_region
from flotilla.cli.waves import parse_waves
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


@click.command(short_help="Set the weights of a service's revisions.")
@click.argument("service")
@click.argument("pairs", nargs=-1, metavar="REVISION=WEIGHT...")
@click.option(
    "--stop-all",
    is_flag=True,
    help="Allow weights that are all 0: every instance of SERVICE is unassigned, and its "
    "agent takes it out of the load balancer, stops and removes its units; refused for "
    "weights that still run something",
)
@click.option(
    "--waves",
    metavar="REGION,REGION...",
    help="Roll out one region at a time, in this order (every region of SERVICE once): "
    "each starts when the one before completed and --wave-bake passed; a failure stops "
    "the waves. Follows them until they end (`flotilla rollout waves` carries on)",
)
@click.option(
    "--wave-bake",
    type=Seconds(0, 7 * 24 * 3600),
    default=0,
    show_default=True,
    help="Seconds between a region's completed rollout and the next region's start",
)
@wait_options
@output_option
@aws_options
def weights(
    service: str, pairs: tuple[str, ...], stop_all: bool, waves: str | None, wave_bake: float,
    wait: bool, interval: float, timeout: float, output: str, **options: Any,
) -> None:  # fmt: skip
    """Set the weights of SERVICE's revisions, e.g. `flotilla weights api v1=90 v2=10`.

    A revision is named by its whole id, else its exact label, else a unique prefix of
    its id: a label always names its own revision. Revisions not named keep their
    weights; weight 0 takes a revision out of the rollout. Weights that are all 0 are
    refused unless --stop-all is given. With --wait, follows the rollout the change
    starts, like `flotilla rollout watch`, and exits with its outcome.

    A service of several regions gets the weights in every region at once (every region
    is checked before any is written), or, with --waves, one region after another.
    """
    validation.service_name(service)
    parsed = parse_pairs(pairs)
    if waves is not None:
        in_waves(
            service,
            parsed,
            parse_waves(waves),
            int(wave_bake),
            stop_all,
            interval,
            timeout,
            output,
            options,
        )
        return
    wiring = wiring_from(options)
    current = in_region(
        wiring.region, find_service, wiring.store, service, wiring.settings.environment
    )
    if len(current.regions) > 1:
        regional = set_everywhere(
            wiring, service, parsed, stop_all=stop_all, output=output, one_line=wait
        )
        for there in regional.wirings.values() if wait else ():
            watch_rollout(
                there, service, interval=interval, timeout=timeout, output=output,
                changed_here=True,
            )  # fmt: skip
        return
    change = wiring.operations.set_weights(current, parsed, stop_all=stop_all)
    if change.unwoken is not None:
        warn_unwoken(change.unwoken)
    stored, labels = change.service, change.labels
    if output == "json":
        (print_json_line if wait else print_json)(
            {
                "service": service,
                "version": stored.version,
                "weights": [
                    {"id": rev, "label": labels.get(rev), "weight": w}
                    for rev, w in sorted(stored.weights.items())
                ],
            }
        )
    else:
        print_table(
            ["LABEL", "ID", "WEIGHT"],
            [
                [labels.get(rev, "?"), rev[:ID_CHARS], w]
                for rev, w in sorted(stored.weights.items(), key=lambda i: labels.get(i[0], ""))
            ],
        )
    if wait:
        watch_rollout(
            wiring, service, interval=interval, timeout=timeout, output=output, changed_here=True
        )


def in_waves(
    service: str, parsed: list[tuple[str, int]], regions: tuple[str, ...], bake: int,
    stop_all: bool, interval: float, timeout: float, output: str, options: dict[str, Any],
) -> None:  # fmt: skip
    """Stage the waves in every region (nothing changes if any refuses), then run them."""
    from flotilla.cli.rollout_commands import operator_name
    from flotilla.cli.waves import Run, stage

    wiring = wiring_from(options)
    plan = stage(
        wiring, service, parsed, regions, bake_seconds=bake, stop_all=stop_all, by=operator_name()
    )
    click.echo(
        f"waves of {service} staged: {' -> '.join(regions)} (plan {plan.number}); "
        "the next wave starts only while this command, or `flotilla rollout waves "
        f"{service}`, runs",
        err=output == "json",
    )
    Run(wiring, service, plan.number, interval, timeout, output).run()
