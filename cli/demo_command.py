"""`flotilla demo`: a whole cluster on this machine, no AWS account, about two minutes."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import click

from flotilla.cli.demo.emulator import REGION, client_environment, embedded_aws
from flotilla.cli.demo.event_feed import EventFeed
from flotilla.cli.demo.fleet import DemoError, Fleet
from flotilla.cli.demo.runtimes import CHOICES, RuntimeChoice, choose_runtime
from flotilla.cli.demo.secret_check import check_secret
from flotilla.cli.demo.story import Story
from flotilla.cli.stack_deploy import environment_stack_name
from flotilla.cli.wiring import AwsSettings, Wiring
from flotilla.engine.errors import ConfigurationError

ENVIRONMENT = "demo"


@click.command()
@click.option(
    "--instances", type=click.IntRange(2, 20), default=4, show_default=True,
    help="Simulated instances, each with its own agent",
)  # fmt: skip
@click.option(
    "--runtime", type=click.Choice(CHOICES), default="auto", show_default=True,
    help="Where units run: systemd (a private manager per instance, as root), the process "
    "runtime, or auto: systemd where it can be had",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where logs, spans and the trace page go [default: a new temporary directory]",
)
def demo(instances: int, runtime: str, workdir: Path | None, as_json: bool) -> None:
    """Run Flotilla end to end on this machine, with no AWS account.

    Starts an embedded AWS emulator (moto) on loopback, creates an environment and a
    service, starts two schedulers and INSTANCES agents (units run on real systemd, one
    private manager per instance, when run as root; else as local processes), rolls out
    a canary, kills an agent in the middle of a deploy and lets it resume, rolls out a
    broken revision that is reverted on its own, and shows the trace. An SQS queue
    subscribed to the environment's events topic prints what other systems would hear.
    Everything it started is stopped at the end; logs, spans and the trace page stay in
    --workdir.
    """
    choice = choose_runtime(runtime)
    work = (workdir or Path(tempfile.mkdtemp(prefix="flotilla-demo-"))).resolve()
    started = time.monotonic()

    def say(line: str) -> None:
        click.echo(line, err=as_json)  # with --json, stdout holds only the summary

    say(f"Flotilla demo: {instances} instances, work directory {work}")
    (work / "logs").mkdir(parents=True, exist_ok=True)
    with embedded_aws(work / "logs" / "aws-emulator.log") as endpoint:
        say(f"==> An embedded AWS emulator (moto server) listens on {endpoint}")
        environment = client_environment(endpoint, ENVIRONMENT)
        # This process reads the store like the others, with the same settings only.
        for name in [n for n in os.environ if n.startswith(("AWS_", "FLOTILLA_"))]:
            del os.environ[name]
        os.environ.update(environment)
        wiring = Wiring(AwsSettings(ENVIRONMENT, REGION, None, endpoint))
        fleet = Fleet(work, environment, say, colour=sys.stdout.isatty(), runtime=choice.kind)
        feed = EventFeed(
            wiring.client("sns"),
            wiring.client("sqs"),
            lambda: wiring.stacks.outputs(environment_stack_name(ENVIRONMENT))["EventsTopicArn"],
            say,
        )
        story = Story(fleet, wiring.store, instances, say, feed)
        html = work / "trace.html"
        try:
            choice = _start_runtime(fleet, choice, runtime, story.instance_ids)
            story.run(html)
            say("")
            say("==> Stopping the agents and the schedulers")
            fleet.stop_daemons()
            report = check_secret(
                story.secret,
                work,
                fleet.transcript,
                wiring.dynamodb,
                [getattr(wiring.tables, f.name) for f in fields(wiring.tables)],
            )
        finally:
            fleet.stop_daemons()
            fleet.stop_units()
            fleet.remove_state()  # the units' environment files, the only copies of the secret
    say("")
    say("==> Where did the secret environment value go?")
    say(
        f"    checked {report.places_checked} places: every log and span file, every CLI "
        "output, every DynamoDB item"
    )
    say(
        f"    found only in the units' {len(report.env_files)} environment file(s), "
        "each mode 0600 (removed with the units)"
    )
    if not report.clean:
        raise DemoError("the secret leaked into: " + "; ".join(report.leaks))
    wrong = [r for r in story.summary if r.revision != "v2" or r.http != "hello from v2"]
    if wrong:
        raise DemoError(
            "did not converge: "
            + "; ".join(f"{r.instance} runs {r.revision} and answers {r.http!r}" for r in wrong)
        )
    if as_json:
        summary = {
            "service": "web",
            "runtime": choice.kind,
            "seconds": round(time.monotonic() - started, 1),
            "instances": [row.as_json() for row in story.summary],
            "secret_found_outside_env_files": report.leaks,
            "secret_places_checked": report.places_checked,
            "secret_env_files": len(report.env_files),
            "trace_html": str(html),
            "workdir": str(work),
        }
        click.echo(json.dumps(summary, indent=2))
    say("")
    say(f"Done in {time.monotonic() - started:.0f} s. Open the trace: {html}")
    say(f"Logs and spans (OTLP JSON): {work / 'logs'}, {fleet.spans}")


def _start_runtime(
    fleet: Fleet, choice: RuntimeChoice, asked: str, instance_ids: list[str]
) -> RuntimeChoice:
    """Start a private systemd manager per instance when systemd was chosen, and say where
    units run. A manager that will not start (root in a container without the right to
    mount, say) fails `--runtime systemd`; `auto` falls back to the process runtime."""
    if choice.kind == "systemd":
        began = time.monotonic()
        try:
            fleet.start_managers(instance_ids)
        except (ConfigurationError, OSError) as exc:
            fleet.stop_units()
            why = str(exc).splitlines()[0][:200]
            if asked == "systemd":
                raise ConfigurationError(
                    f"a private systemd manager did not start: {why} "
                    f"(see {fleet.work / 'managers'}); or use --runtime process"
                ) from exc
            choice = RuntimeChoice("process", f"a private systemd manager did not start: {why}")
            fleet.runtime = "process"
        else:
            fleet.say(choice.description)
            fleet.say(
                f"==> Started {len(instance_ids)} private systemd managers in "
                f"{time.monotonic() - began:.1f} s (their files: {fleet.work / 'managers'})"
            )
            return choice
    fleet.say(choice.description)
    return choice
