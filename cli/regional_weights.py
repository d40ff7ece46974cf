"""`flotilla weights` for a service of several regions, without `--waves`: every region
at once, staged (`cli.regions`).

The names are resolved and the weights checked in every region before any is written
(each region seals its own revisions, so a label has an id per region); an unreachable
region, a label one region lacks, or a rollout in waves under way changes nothing
anywhere. Then each region's weights are set, and each region's outcome said.
"""

from __future__ import annotations

from collections.abc import Sequence

from flotilla.cli.notify import warn_unwoken
from flotilla.cli.output import print_json, print_json_line
from flotilla.cli.regions import Regional, in_region, read_everywhere, say_region
from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import FlotillaError, ValidationError
from flotilla.engine.operations import waves as wave_rules
from flotilla.engine.operations.names import weights_text
from flotilla.engine.operations.rules import check_running
from flotilla.engine.operations.steering import named_weights
from flotilla.engine.records import Service


def set_everywhere(
    wiring: Wiring,
    name: str,
    pairs: Sequence[tuple[str, int]],
    *,
    stop_all: bool,
    output: str,
    one_line: bool,
) -> Regional:
    """Set `pairs` in every region of `name`; the regions as they were read."""
    regional = read_everywhere(wiring, name)
    plan = regional.services[regional.home].waves
    if plan is not None and not plan.finished:
        raise ValidationError(
            f"a rollout in waves of {name} is under way ({wave_rules.describe(plan)}); "
            f"follow it with `flotilla rollout waves {name}`, or stop it with --stop first"
        )
    chosen, labels = resolve_everywhere(regional, name, pairs, stop_all=stop_all)
    stored: dict[str, Service] = {}
    for region, there in regional.wirings.items():
        change = in_region(
            region,
            there.operations.set_weights,
            regional.services[region],
            list(chosen[region].items()),
            stop_all=stop_all,
        )
        if change.unwoken is not None:
            warn_unwoken(change.unwoken)
        stored[region] = change.service
        if output != "json":
            shown = weights_text(change.service.weights, labels[region])
            say_region(region, f"weights {shown} (version {change.service.version})", output=output)
    if output == "json":
        (print_json_line if one_line else print_json)(
            {
                "service": name,
                "regions": {
                    region: {
                        "version": service.version,
                        "weights": [
                            {"id": rev, "label": labels[region].get(rev), "weight": w}
                            for rev, w in sorted(service.weights.items())
                        ],
                    }
                    for region, service in stored.items()
                },
            }
        )
    return regional


def resolve_everywhere(
    regional: Regional, name: str, pairs: Sequence[tuple[str, int]], *, stop_all: bool
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, str]]]:
    """The revision ids and weights `pairs` name in each region (each region seals its
    own revisions, so a label has an id per region), each region's resulting weights
    checked as `weights` checks them; and each region's labels by id. A refusal names
    its region."""
    chosen: dict[str, dict[str, int]] = {}
    labels: dict[str, dict[str, str]] = {}
    for region, there in regional.wirings.items():
        revisions = in_region(region, there.store.list_revisions, name)
        labels[region] = {r.id: r.label for r in revisions}
        current = regional.services[region]
        try:
            chosen[region] = named_weights(revisions, pairs, name)
            weights = {**current.weights, **chosen[region]}
            if weights != current.weights:
                check_running(weights, stop_all=stop_all, service=name)
        except FlotillaError as refused:
            raise type(refused)(f"{region}: {refused.message}") from refused
    return chosen, labels
