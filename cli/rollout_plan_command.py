"""`flotilla rollout plan SERVICE REV=W…`: which instances a change of weights would move,
in which waves, and which units would restart on each; nothing is changed.

The pairs are taken exactly as `flotilla weights` takes them (`weights_command.parse_pairs`,
then the naming rule and the all-zero rule of `Operations.set_weights`), so a plan is
refused for the same mistakes the change itself would be. The simulation is
`cli.rollout_plan`; this module reads what a scheduler pass reads and prints the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from flotilla.cli.options import aws_options, wiring_from
from flotilla.cli.output import output_option, print_json, print_table
from flotilla.cli.rollout_plan import Boundary, Move, RolloutPlan, Wave, simulate
from flotilla.cli.rollout_waits import read_inputs
from flotilla.cli.weights_command import parse_pairs
from flotilla.engine import validation
from flotilla.engine.liveness import DEFAULT_INSTANCE_TTL
from flotilla.engine.operations.names import find_service, label_of, weights_text
from flotilla.engine.operations.rules import check_running
from flotilla.engine.operations.steering import named_weights
from flotilla.scheduler.steps import step_words

RESTARTS_NOTE = (
    "a deploy today restarts every unit of the old revision and of the new one, so each "
    "moving instance restarts all the units listed"
)


@click.command(name="plan", short_help="Show what new weights would move, changing nothing.")
@click.argument("service")
@click.argument("pairs", nargs=-1, metavar="REVISION=WEIGHT...")
@output_option
@aws_options
def plan_command(service: str, pairs: tuple[str, ...], output: str, **options: Any) -> None:
    """Show, without changing anything, what `flotilla weights SERVICE REVISION=WEIGHT...`
    would do: which instances move, in which waves, and which units restart on each.

    The scheduler's own planner is run on a copy of what it reads now, where every deploy
    succeeds, every alarm is OK, every webhook answers 2xx and every pause step is
    promoted. A wave is what one scheduler pass would start; steps, bakes, gates and
    pauses are shown between waves. Revisions are named as `flotilla weights` names them.
    """
    validation.service_name(service)
    parsed = parse_pairs(pairs)
    wiring = wiring_from(options)
    store = wiring.store
    record = find_service(store, service, wiring.settings.environment)
    revisions = store.list_revisions(service)
    weights = {**record.weights, **named_weights(revisions, parsed, service)}
    check_running(weights, stop_all=False, service=service)
    now = wiring.clock.now()
    live, dead, deploys = read_inputs(store, record, now, DEFAULT_INSTANCE_TTL)
    units = {r.id: tuple(r.units) for r in revisions}
    result = simulate(record, weights, live, dead, deploys, units, now)
    labels = {r.id: r.label for r in revisions}
    if output == "json":
        print_json(plan_json(result, labels))
    else:
        print_plan(result, labels)


def _revision(labels: Mapping[str, str], revision: str | None) -> dict[str, Any] | None:
    return None if revision is None else {"id": revision, "label": label_of(labels, revision)}


def _move_json(move: Move, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "instance": move.instance_id,
        "from": _revision(labels, move.from_revision),
        "to": _revision(labels, move.to_revision),
        "restarts": list(move.restarts),
    }


def plan_json(plan: RolloutPlan, labels: Mapping[str, str]) -> dict[str, Any]:
    timeline: list[dict[str, Any]] = []
    for item in plan.timeline:
        if isinstance(item, Wave):
            timeline.append({"kind": "wave", "wave": item.number})
        else:
            timeline.append({"kind": item.kind, "text": item.text, "seconds": item.seconds})
    return {
        "service": plan.service.name,
        "changes_nothing": True,
        "weights": {"from": dict(plan.service.weights), "to": dict(plan.weights)},
        "labels": {rev: label_of(labels, rev) for rev in sorted(set(labels))},
        "steps": [step_words(plan.steps, n) for n in range(len(plan.steps))],
        "waves": [
            {
                "wave": wave.number,
                "step": wave.step + 1,
                "instances": [_move_json(move, labels) for move in wave.moves],
            }
            for wave in plan.waves
        ],
        "timeline": timeline,
        "moves": sum(len(wave.moves) for wave in plan.waves),
        "unassigned": list(plan.unassigned),
        "ends": plan.ended,
        "restarts_note": RESTARTS_NOTE,
        "paused": plan.service.paused,
    }


def print_plan(plan: RolloutPlan, labels: Mapping[str, str]) -> None:
    service = plan.service
    before, after = weights_text(service.weights, labels), weights_text(plan.weights, labels)
    click.echo(f"plan for {service.name}: {before} -> {after} (nothing is changed)")
    if service.paused:
        click.echo(
            f"{service.name} is paused: nothing moves until `flotilla rollout resume "
            f"{service.name}`; the plan shows what happens after"
        )
    moves = [move for wave in plan.waves for move in wave.moves]
    if not moves:
        click.echo(f"no instance would move; then: {_ending(plan)}")
        return
    click.echo("")
    for item in plan.timeline:
        if isinstance(item, Wave):
            names = ", ".join(move.instance_id for move in item.moves)
            click.echo(f"  wave {item.number}: {names}")
        else:
            click.echo(_boundary_line(item))
    click.echo(f"then: {_ending(plan)}")
    click.echo("")
    wave_of = {move.instance_id: wave.number for wave in plan.waves for move in wave.moves}
    print_table(
        ["INSTANCE", "WAVE", "FROM", "TO", "UNITS RESTARTED"],
        [
            [
                move.instance_id,
                wave_of[move.instance_id],
                label_of(labels, move.from_revision) or "-",
                label_of(labels, move.to_revision),
                ", ".join(move.restarts) or "-",
            ]
            for move in moves
        ],
    )
    click.echo(f"\nnote: {RESTARTS_NOTE}")
    if plan.unassigned:
        click.echo(f"left without a revision: {', '.join(plan.unassigned)}")


def _ending(plan: RolloutPlan) -> str:
    return "the rollout completes" if plan.ended == "complete" else plan.ended


def _boundary_line(item: Boundary) -> str:
    if item.kind == "step":
        return item.text
    if item.kind == "bake":
        return f"  bakes {item.seconds} s"
    if item.kind == "pause":
        return f"  waits: {item.text}"
    return f"  gate: {item.text}"
