"""`flotilla rollout waves SERVICE`: follow, carry on or stop a rollout in waves.

A rollout in waves is started by `flotilla weights SERVICE REV=W ... --waves A,B` and
advances while a command follows it (`cli.waves`); this command picks up the plan from
the home region wherever it stands, so one killed mid-wave loses nothing. `--stop` ends
the plan where it is: later waves never start and every region keeps what it runs.
"""

from __future__ import annotations

from typing import Any

import click

from flotilla.cli.follow import follow_options
from flotilla.cli.options import aws_options, wiring_from
from flotilla.cli.output import output_option, print_json
from flotilla.cli.regional_status import waves_json
from flotilla.cli.waves import Run, home_of, stop
from flotilla.engine import validation
from flotilla.engine.errors import FlotillaError
from flotilla.engine.operations import waves as rules


@click.command(name="waves", short_help="Follow, carry on or stop a rollout in waves.")
@click.argument("service")
@click.option("--stop", "stop_waves", is_flag=True, help="Stop the waves where they are")
@click.option("--reason", metavar="TEXT", help="Why, with --stop (one line)")
@follow_options
@output_option
@aws_options
def waves_command(
    service: str, stop_waves: bool, reason: str | None, interval: float, timeout: float,
    output: str, **options: Any,
) -> None:  # fmt: skip
    """Carry on SERVICE's rollout in waves from where it stands, until it completes
    (exit 0) or stops (exit 1); a plan that ended already is shown.

    The next wave starts only while this command (or the `weights --waves` that began
    the plan) runs; each region's scheduler carries on with its own rollout regardless.
    With --stop, the waves end where they are: later regions never start, and every
    region keeps what it runs.
    """
    from flotilla.cli.rollout_commands import operator_name, parse_reason

    validation.service_name(service)
    why = parse_reason(reason)
    if why is not None and not stop_waves:
        raise FlotillaError("--reason goes with --stop")
    wiring = wiring_from(options)
    if stop_waves:
        by = operator_name()
        plan = stop(wiring, service, f"stopped by {by}" + (f": {why}" if why else ""))
        if output == "json":
            print_json(waves_json(plan, wiring.clock.now()))
        else:
            click.echo(f"the waves of {service} are stopped: {rules.describe(plan)}")
        return
    _, record = home_of(wiring, service)
    if record.waves is None:
        raise FlotillaError(
            f"{service} has had no rollout in waves; start one with "
            f"`flotilla weights {service} REV=W ... --waves A,B`"
        )
    Run(wiring, service, record.waves.number, interval, timeout, output).run()
