"""Which Flotilla the instances install: the options of `init` and `service provision`.

- no option: the wheel of the Flotilla this CLI runs (cli.running_wheel), published;
- `--wheel PATH`: that file, once checked to be a wheel of Flotilla, published;
- `--wheel-url URL --wheel-sha256 HEX`: an https URL of a wheel; nothing is published.

Published means stored in the environment's artifact bucket under its content address
(adapters.artifacts), with the wheel's dependencies pinned and hashed beside it
(cli.dependency_lock); the stack then names both keys and sha256s (FlotillaWheel,
FlotillaWheelSha256, FlotillaRequirements, FlotillaRequirementsSha256), which the
instances' user data fetches with their role and checks. A URL's wheel has no pinned
requirements: pip resolves them from the instance's index.
Every option is checked before any AWS call, so a refused one changes nothing.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from flotilla.adapters.artifacts import (
    SHA256_HEX,
    PublishedWheel,
    S3ArtifactStore,
    requirements_key,
    wheel_digest,
    wheel_key,
)
from flotilla.cli.dependency_lock import DependencyLock, lock_for
from flotilla.cli.running_wheel import check_wheel, rebuild_running_wheel
from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import FlotillaError, ValidationError

F = TypeVar("F", bound=Callable[..., Any])

ARTIFACT_BUCKET_OUTPUT = "ArtifactBucketName"  # the environment stack's output
# What the templates' FlotillaWheel accepts for a URL (AllowedPattern).
WHEEL_URL = re.compile(r"^https://[^\s'\"$`]+[.]whl$")


def wheel_options(command: F) -> F:
    """--wheel, --wheel-url and --wheel-sha256, passed as `wheel`, `wheel_url`, `wheel_sha256`."""
    options = [
        click.option(
            "--wheel",
            metavar="PATH",
            type=click.Path(path_type=Path),
            help="Publish this wheel of Flotilla for the instances [default: the wheel of the "
            "Flotilla running this command]",
        ),
        click.option(
            "--wheel-url",
            metavar="URL",
            help="Have the instances install the wheel at this https URL instead (nothing is "
            "published; needs --wheel-sha256)",
        ),
        click.option(
            "--wheel-sha256",
            metavar="HEX",
            help="The sha256 of the wheel at --wheel-url (64 hex digits); instances refuse "
            "a wheel that does not match",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@dataclass(frozen=True)
class WheelRequest:
    """The wheel options as given, checked for shape."""

    path: Path | None = None
    url: str | None = None
    sha256: str | None = None


def wheel_request(wheel: Path | None, url: str | None, sha256: str | None) -> WheelRequest:
    """Refuse a combination or a value the stack could not take, before anything else."""
    if wheel is not None and (url is not None or sha256 is not None):
        raise ValidationError(
            "give --wheel or --wheel-url with --wheel-sha256, not both (a --wheel's sha256 "
            "is computed)"
        )
    if sha256 is not None and not SHA256_HEX.match(sha256.lower()):
        raise ValidationError(f"invalid --wheel-sha256 {sha256[:80]!r}: give 64 hex digits")
    if url is not None and not WHEEL_URL.match(url):
        raise ValidationError(
            f"invalid --wheel-url {url[:120]!r}: give an https URL of a .whl (no spaces or quotes)"
        )
    if (url is None) != (sha256 is None):
        missing = "--wheel-sha256 HEX" if sha256 is None else "--wheel-url URL"
        raise ValidationError(f"give --wheel-url and --wheel-sha256 together: add {missing}")
    return WheelRequest(wheel, url, None if sha256 is None else sha256.lower())


@dataclass(frozen=True)
class ChosenWheel:
    """What the stack will name: a wheel file to publish (path set), or a URL."""

    location: str  # the bucket key the file gets, or the URL
    sha256: str
    path: Path | None = None
    size: int | None = None
    lock: DependencyLock | None = None  # a file's pinned requirements; None for a URL

    @property
    def lock_key(self) -> str:
        return "" if self.lock is None else requirements_key(self.lock.sha256)

    @property
    def parameters(self) -> dict[str, str]:
        return {
            "FlotillaWheel": self.location,
            "FlotillaWheelSha256": self.sha256,
            "FlotillaRequirements": self.lock_key,
            "FlotillaRequirementsSha256": "" if self.lock is None else self.lock.sha256,
        }


@contextmanager
def chosen_wheel(request: WheelRequest, wiring: Wiring) -> Iterator[ChosenWheel]:
    """The wheel the request names, checked (or rebuilt into a folder kept while in use);
    a file's dependencies are pinned from the wiring's package index."""
    if request.url is not None and request.sha256 is not None:
        yield ChosenWheel(request.url, request.sha256)
        return
    with tempfile.TemporaryDirectory(prefix="flotilla-wheel-") as folder:
        wheel = check_wheel(request.path) if request.path else rebuild_running_wheel(Path(folder))
        path = wheel.path
        lock = lock_for(path.name, wheel.requires, wiring.package_index)
        sha256, size = wheel_digest(path)
        yield ChosenWheel(wheel_key(path.name, sha256), sha256, path, size, lock)


def _say(text: str, output: str) -> None:
    # With --output json, stdout is the JSON document alone.
    click.echo(text, err=output == "json")


def _facts(size: int | None, sha256: str) -> str:
    return f"sha256 {sha256}, {size} bytes"


def publish(store: S3ArtifactStore, chosen: ChosenWheel, output: str) -> PublishedWheel:
    """Publish the chosen file and say so; the key is the one `chosen` promised."""
    if chosen.path is None:
        raise FlotillaError(f"{chosen.location} is a URL: there is nothing to publish")
    published = store.publish_wheel(chosen.path)
    done = "published" if published.uploaded else "already published, not uploaded again"
    _say(
        f"wheel {chosen.path.name}: {done}: {store.url(published.key)} "
        f"({_facts(published.size, published.sha256)})",
        output,
    )
    if chosen.lock is not None:
        pinned = store.publish_requirements(chosen.lock.text)
        done = "published" if pinned.uploaded else "already published, not uploaded again"
        _say(
            f"its {len(chosen.lock.pins)} pinned requirements: {done}: {store.url(pinned.key)}",
            output,
        )
    return published


def publish_unless_dry_run(
    store: S3ArtifactStore | None, chosen: ChosenWheel, *, dry_run: bool, output: str
) -> None:
    """Publish a chosen file (a URL has nothing to publish), or with --dry-run say what
    publishing would do. `store` is None only for a bucket its stack has not made yet."""
    if dry_run:
        preview(store, chosen, output)
    elif chosen.path is not None:
        if store is None:
            raise FlotillaError("there is no artifact bucket to publish the wheel to")
        publish(store, chosen, output)


def preview(store: S3ArtifactStore | None, chosen: ChosenWheel, output: str) -> None:
    """What publishing would do (read only: one HeadObject when the bucket exists)."""
    if chosen.path is None:
        _say(f"wheel {chosen.location} (sha256 {chosen.sha256}): not published, a URL", output)
        return
    facts = _facts(chosen.size, chosen.sha256)
    name = chosen.path.name
    if store is None:
        _say(
            f"would publish wheel {name} as {chosen.location} ({facts}) to the artifact "
            "bucket the stack creates",
            output,
        )
    elif store.is_published(chosen.location, chosen.sha256, chosen.size or 0):
        _say(f"wheel {name}: already published: {store.url(chosen.location)} ({facts})", output)
    else:
        _say(f"would publish wheel {name} to {store.url(chosen.location)} ({facts})", output)
    if chosen.lock is not None:
        _say(f"with its {len(chosen.lock.pins)} pinned requirements as {chosen.lock_key}", output)
