"""Deploying a CloudFormation stack from the CLI, as `init` and `service provision` do.

Parameters are passed explicitly and completely (`stack_parameters`: as given, else as the
stack has them, else the template's default), so an option left out never resets a value
chosen before and the same command run twice changes nothing. `deploy_stack` previews the
change set (`--dry-run`) or deploys and waits, printing each stack event as it comes, and
ends with one report: a line for people, one JSON document for scripts (progress then
goes to stderr, so stdout stays JSON). A command over several regions passes `documents`
to gather each region's JSON document into one of its own.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Mapping
from typing import Any

import click

from flotilla.adapters.stacks import (
    CloudFormationStacks,
    StackChange,
    StackEvent,
    StackResult,
    change_summary,
)
from flotilla.adapters.templates import load_template, template_text
from flotilla.cli.output import print_json, print_table
from flotilla.engine.errors import ValidationError


def environment_stack_name(environment: str) -> str:
    return f"flotilla-{environment}"


def stack_parameters(
    stacks: CloudFormationStacks,
    stack: str,
    template: str,
    given: Mapping[str, str | None],
    managed: Collection[str],
) -> dict[str, str]:
    """Every managed parameter: as given, else as the stack has it, else the default.

    All are passed explicitly, so an option left out never resets a value chosen before,
    and the same command run twice sends the same parameters (nothing to change).
    """
    declared: dict[str, Any] = load_template(template)["Parameters"]
    current = stacks.parameters(stack)
    values: dict[str, str] = {}
    for key in managed:
        chosen = given.get(key)
        if chosen is not None:
            values[key] = chosen
        elif key in current:
            values[key] = _list_value(current[key])
        elif "Default" in declared[key]:
            values[key] = str(declared[key]["Default"])
    return values


def _list_value(value: str) -> str:
    """A CommaDelimitedList's current value as CloudFormation takes it: `a,b`.

    moto describes such a parameter as a Python list (`['a', 'b']`); AWS as `a,b`.
    """
    if value.startswith("[") and value.endswith("]"):
        parsed = ast.literal_eval(value)
        if isinstance(parsed, list):
            return ",".join(str(item) for item in parsed)
    return value


def subnet_list(text: str | None) -> str | None:
    """`subnet-a,subnet-b` (spaces allowed), checked for shape; None stays None."""
    if text is None:
        return None
    subnets = [part.strip() for part in text.split(",") if part.strip()]
    for subnet in subnets:
        if not subnet.startswith("subnet-") or not subnet[7:].isalnum():
            raise ValidationError(f"invalid subnet id {subnet[:40]!r}: expected subnet-<hex>")
    return ",".join(subnets)


def print_event(event: StackEvent, *, err: bool = False) -> None:
    reason = f"  {event.reason}" if event.reason else ""
    click.echo(f"{event.resource}  {event.resource_type}  {event.status}{reason}", err=err)


def changes_json(changes: list[StackChange]) -> list[dict[str, Any]]:
    return [
        {
            "action": c.action,
            "resource": c.resource,
            "type": c.resource_type,
            "replacement": c.replacement,
        }
        for c in changes
    ]


def emit_json(document: dict[str, Any], documents: list[dict[str, Any]] | None) -> None:
    """Print `document`, or add it to `documents` (a command over several regions)."""
    if documents is None:
        print_json(document)
    else:
        documents.append(document)


def report_preview(
    stack: str,
    existed: bool,
    changes: list[StackChange] | None,
    output: str,
    documents: list[dict[str, Any]] | None = None,
) -> None:
    if output == "json":
        emit_json(
            {
                "stack": stack,
                "dry_run": True,
                "exists": existed,
                "changed": changes is not None,
                "changes": changes_json(changes or []),
            },
            documents,
        )
        return
    if changes is None:
        click.echo(f"stack {stack} is up to date: nothing would change")
        return
    verb = "update" if existed else "create"
    if not changes:
        click.echo(f"would {verb} stack {stack}: parameters or outputs only, no resource")
        return
    click.echo(f"would {verb} stack {stack}: {change_summary(changes)}")
    print_table(
        ["ACTION", "RESOURCE", "TYPE", "REPLACEMENT"],
        [[c.action, c.resource, c.resource_type, c.replacement or ""] for c in changes],
    )


def deploy_stack(
    stacks: CloudFormationStacks,
    stack: str,
    template: str,
    parameters: Mapping[str, str],
    *,
    dry_run: bool,
    output: str,
    documents: list[dict[str, Any]] | None = None,
) -> StackResult | None:
    """Preview or deploy `stack`, printing progress; the result (None for a dry run)."""
    if dry_run:
        existed = stacks.status(stack) is not None
        changes = stacks.preview(stack, template_text(template), parameters)
        report_preview(stack, existed, changes, output, documents)
        return None
    events: list[StackEvent] = []
    result = apply_stack(stacks, stack, template, parameters, output=output, events=events)
    report_result(stack, result, events, output, documents=documents)
    return result


def apply_stack(
    stacks: CloudFormationStacks,
    stack: str,
    template: str,
    parameters: Mapping[str, str],
    *,
    output: str,
    events: list[StackEvent],
) -> StackResult:
    """Deploy `stack` and wait, printing each event as it comes and adding it to `events`."""

    # Progress goes to stdout for people; with --output json to stderr, so stdout stays JSON.
    def on_event(event: StackEvent) -> None:
        events.append(event)
        print_event(event, err=output == "json")

    return stacks.deploy(stack, template_text(template), parameters, on_event)


def report_result(
    stack: str,
    result: StackResult,
    events: list[StackEvent],
    output: str,
    *,
    changed: bool | None = None,
    documents: list[dict[str, Any]] | None = None,
) -> None:
    """The outcome: one line for people, one JSON document for scripts."""
    changed = result.changed if changed is None else changed
    if output == "json":
        emit_json(
            {
                "stack": stack,
                "status": result.status,
                "changed": changed,
                "changes": changes_json(result.changes),
                "events": [
                    {
                        "resource": e.resource,
                        "type": e.resource_type,
                        "status": e.status,
                        "reason": e.reason,
                    }
                    for e in events
                ],
                "outputs": result.outputs,
            },
            documents,
        )
    elif changed and result.changes:
        click.echo(f"stack {stack}: {result.status} ({change_summary(result.changes)})")
    elif changed:  # created, or only parameters or outputs changed
        click.echo(f"stack {stack}: {result.status}")
    else:
        click.echo(f"stack {stack} is up to date ({result.status}): nothing to change")
