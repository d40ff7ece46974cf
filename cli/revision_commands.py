"""`flotilla revision add|list|show`: immutable sets of unit files and sealed environments.

`add` reads the files (cli.revision_sources), checks the units the way systemd would
(`engine.unit_checks`, and `systemd-analyze verify` where this machine has it:
`cli.unit_verify`), checks the label (`engine.operations.names.new_label`: one revision
per label, so a label always names its revision), seals each unit's environment with
the environment's KMS key, stores the revision and prints its id. `list` and `show` print
variable NAMES only: values are never decrypted here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from flotilla.cli import revision_sources, unit_verify
from flotilla.cli.options import aws_options, wiring_from
from flotilla.cli.output import output_option, print_fields, print_json, print_table
from flotilla.cli.regions import in_region, read_everywhere, say_region
from flotilla.engine import validation
from flotilla.engine.errors import ValidationError
from flotilla.engine.operations.names import ID_CHARS, find_revision, find_service, new_label
from flotilla.engine.records import Revision
from flotilla.engine.revisions import build_revision, hook_environment
from flotilla.engine.unit_checks import advice, check_units, refuse


@click.group(short_help="Add, list and show a service's revisions.")
def revision() -> None:
    """Add, list and show a service's revisions."""


@revision.command(short_help="Add a revision from a directory or a tar on stdin.")
@click.argument("service")
@click.argument("source", metavar="DIR|-")
@click.option(
    "--label",
    help="A name for the revision, e.g. v2, unique in the service [default: a timestamp]",
)
@click.option(
    "--kms-key-id",
    envvar="FLOTILLA_KMS_KEY_ID",
    help="KMS key that seals environments [default: alias/flotilla-ENV]",
)
@click.option(
    "--force",
    is_flag=True,
    help="Add it although systemd would ignore parts of a unit (an unknown key or section)",
)
@output_option
@aws_options
def add(
    service: str, source: str, label: str | None, kms_key_id: str | None, force: bool,
    output: str, **options: Any,
) -> None:  # fmt: skip
    """Add a revision of SERVICE from the files in DIR, or from a tar archive on stdin (-).

    DIR holds *.service, *.socket and *.timer unit files and *.env files; X.env is the
    environment of X.service only. An X.env with DOCKER_IMAGE (and DOCKER_PORT_<host>=
    <container> mappings) and no X.service becomes a unit running that container.
    DIR/hooks/ may hold lifecycle hooks: before-stop, after-start and validate scripts,
    and a `timeouts` file of `validate=60` lines (seconds; 300 by default). See
    docs/hooks.md. Prints the new revision's id.

    Units are checked the way systemd reads them (with `systemd-analyze verify` too,
    where this machine has it): one systemd would refuse (a service without ExecStart=,
    a timer without On...=) is never added; one whose keys or sections systemd would
    ignore (a typo like ExecStartt=) is added only with --force.

    Labels: each revision of a service has its own label, and a label always names its
    revision (before any id prefix), so a label another revision has is refused, as is
    one of 64 hex digits (it reads as a whole id). A label that is also the start of
    another revision's id is fine: that revision keeps its label and its longer prefixes.
    """
    validation.service_name(service)
    if label is not None:
        validation.revision_label(label)
    # Everything the user gave is checked before any AWS call.
    if source == "-":
        if sys.stdin.isatty():
            raise ValidationError(
                "'-' reads a tar archive from standard input, which is a terminal; pipe one in, "
                f"e.g. `tar -C DIR -c . | flotilla revision add {service} -`"
            )
        data = sys.stdin.buffer.read(revision_sources.MAX_ARCHIVE_BYTES + 1)
        sources = revision_sources.from_tar(data)
    else:
        sources = revision_sources.from_directory(Path(source))
    if sources.hooks:
        hook_environment(sources.environments)  # a clash is refused before any AWS call
    found = check_units(sources.units)
    # The units are sound as far as Flotilla can tell; systemd's own checker has the last
    # word where it is installed (refuse() decides for both, before any AWS call).
    passed = refuse([*found, *unit_verify.verify(sources.units)], force=force)
    for problem in passed:
        click.echo(f"warning: --force: {problem.text()}", err=True)
    wiring = wiring_from(options)
    # Every region of the service is read before anything is sealed (`cli.regions`).
    regional = read_everywhere(wiring, service)
    if kms_key_id is not None and len(regional.regions) > 1 and not kms_key_id.startswith("alias/"):
        raise ValidationError(
            f"--kms-key-id {kms_key_id[:80]!r} names one region's key, but {service} is in "
            f"{', '.join(regional.regions)}: give an alias (alias/NAME) that each region has"
        )
    now = wiring.clock.now()
    existing = {
        region: in_region(region, there.store.list_revisions, service)
        for region, there in regional.wirings.items()
    }
    if label is None:
        taken = {r.label for revisions in existing.values() for r in revisions}
        label = stamp = now.strftime("%Y%m%d-%H%M%S")
        suffix = 1
        while label in taken:  # two adds within the same second
            suffix += 1
            label = f"{stamp}-{suffix}"
    for revisions in existing.values():
        new_label(revisions, label, service)
    ids: dict[str, str] = {}
    labels: dict[str, str] = {}
    for region, there in regional.wirings.items():
        built = in_region(
            region, build_revision, service, label, sources.units, sources.environments,
            there.secret_box(kms_key_id), now, sources.hooks,
        )  # fmt: skip
        stored = in_region(region, there.store.put_revision, built)
        ids[region], labels[region] = stored.id, stored.label
        if stored.label != label:
            # Content-addressed: identical units (and no environment) are the same revision.
            click.echo(
                f"note: this content is already revision {stored.id[:ID_CHARS]} labelled "
                f"{stored.label!r}{_where(region, regional.regions)}; nothing new was stored",
                err=True,
            )
        elif len(regional.regions) > 1:
            say_region(region, f"stored {stored.id[:ID_CHARS]} as {label}", output="json")
    for line in advice(sources.units):  # said once the revision is stored, never refused
        click.echo(f"warning: {line}", err=True)
    home = ids[regional.home]
    if output == "json":
        added: dict[str, Any] = {"id": home, "label": labels[regional.home], "service": service}
        if len(regional.regions) > 1:
            added["ids"] = ids  # sealed with each region's key: an id per region
        print_json(added)
    else:
        click.echo(home)


def _where(region: str, regions: tuple[str, ...]) -> str:
    return f" in {region}" if len(regions) > 1 else ""


@revision.command(name="list", short_help="List a service's revisions and their weights.")
@click.argument("service")
@output_option
@aws_options
def list_(service: str, output: str, **options: Any) -> None:
    """List SERVICE's revisions, oldest first, with their current weights."""
    wiring = wiring_from(options)
    store = wiring.store
    record = find_service(store, service, wiring.settings.environment)
    revisions = store.list_revisions(service)
    if output == "json":
        print_json([_summary(r, record.weights.get(r.id)) for r in revisions])
        return
    print_table(
        ["ID", "LABEL", "CREATED", "UNITS", "WEIGHT"],
        [
            [
                r.id[:ID_CHARS],
                r.label,
                r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                ", ".join(sorted(r.units)),
                record.weights.get(r.id, "-"),
            ]
            for r in revisions
        ],
    )


@revision.command(short_help="Show one revision: its units and variable names.")
@click.argument("service")
@click.argument("revision_name", metavar="REVISION")
@click.option("--units", "show_units", is_flag=True, help="Also print the unit files")
@output_option
@aws_options
def show(service: str, revision_name: str, show_units: bool, output: str, **options: Any) -> None:
    """Show one revision (named by label or id prefix): units and variable NAMES."""
    wiring = wiring_from(options)
    store = wiring.store
    record = find_service(store, service, wiring.settings.environment)
    found = find_revision(store.list_revisions(service), revision_name, service)
    summary = _summary(found, record.weights.get(found.id))
    if output == "json":
        if show_units:
            summary["unit_files"] = dict(sorted(found.units.items()))
            summary["hook_files"] = {name: hook.script for name, hook in found.hooks.items()}
        print_json(summary)
        return
    print_fields(
        [
            ("id", found.id),
            ("label", found.label),
            ("service", found.service),
            ("created", found.created_at.isoformat()),
            ("weight", summary["weight"] if summary["weight"] is not None else "-"),
        ]
    )
    click.echo("units:")
    names = summary["variables"]
    for unit in sorted(found.units):
        variables = ", ".join(names.get(unit, [])) or "(no environment)"
        click.echo(f"  {unit}: {variables}")
        if show_units:
            for line in found.units[unit].splitlines():
                click.echo(f"    | {line}".rstrip())
    if found.hooks:
        click.echo("hooks:")
        for name, hook in found.hooks.items():
            click.echo(f"  {name}: timeout {hook.timeout_seconds} s")
            if show_units:
                for line in hook.script.splitlines():
                    click.echo(f"    | {line}".rstrip())


def _summary(revision: Revision, weight: int | None) -> dict[str, Any]:
    variables = revision.environment.variable_names if revision.environment else {}
    return {
        "id": revision.id,
        "label": revision.label,
        "service": revision.service,
        "created_at": revision.created_at.isoformat(),
        "units": sorted(revision.units),
        "hooks": {name: hook.timeout_seconds for name, hook in revision.hooks.items()},
        "variables": {unit: list(names) for unit, names in sorted(variables.items())},
        "weight": weight,
    }
