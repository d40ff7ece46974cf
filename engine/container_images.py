"""Container units' images: which image a unit runs, and pinning it to a digest.

A container unit (the one `flotilla revision add` generates from an env file with
DOCKER_IMAGE, or any unit written the same way) names its image in one setting,

    Environment=FLOTILLA_IMAGE=registry.example.com/app:stable

and runs `docker run … ${FLOTILLA_IMAGE}`. A tag can move; a digest cannot. So the agent
pulls the image when a deploy starts the unit, resolves the tag to the digest it pulled
(`name@sha256:…`), keeps that in the deploy's checkpoint, and installs the unit with the
line rewritten to the digest. A restart of the unit (systemd's, or the agent's after a
reboot) and a rollback then run exactly that image, whatever the tag points to by then.

A unit installed without a pin (an agent without an image port, a checkpoint written
before pins were recorded) runs its line as written: `docker run` with the tag.
Pure functions only: the pulling is behind the `ContainerImages` port.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from flotilla.engine.errors import ValidationError

IMAGE_VARIABLE = "FLOTILLA_IMAGE"
DIGEST_MARK = "@sha256:"

# A reference lands in command lines and ExecStart=: no blanks, quotes, `%` or `$`, and
# it cannot begin with `-` (an option).
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")
_LINE = re.compile(rf"^Environment={IMAGE_VARIABLE}=(?P<image>[^\s\"'\\]+)[ \t]*$", re.M)


def is_image_reference(image: object) -> bool:
    """Whether `image` is a reference Flotilla passes on (e.g. nginx:1.27, app@sha256:…)."""
    return isinstance(image, str) and _IMAGE.fullmatch(image) is not None


def check_image(image: object) -> str:
    """The reference, or `ValidationError` for one that could be read as an option."""
    if not is_image_reference(image):
        raise ValidationError(f"not an image reference: {image!r:.80}")
    return str(image)


def image_line(image: str) -> str:
    """The unit file line that names a container unit's image."""
    return f"Environment={IMAGE_VARIABLE}={image}"


def image_of(text: str) -> str | None:
    """The image a unit file runs, or None for a unit that is not a container unit."""
    found = _LINE.search(text)
    return found.group("image") if found else None


def is_pinned(image: str) -> bool:
    """Whether an image reference names a digest (it can never move)."""
    return DIGEST_MARK in image


def pin(text: str, reference: str) -> str:
    """The unit file with its image line naming `reference` (a `name@sha256:…`)."""
    if not is_pinned(reference):
        raise ValueError(f"not a digest reference: {reference!r}")
    return _LINE.sub(image_line(reference), text, count=1)


def pin_units(
    units: Mapping[str, str], installed: Mapping[str, str], pins: Mapping[str, str] | None
) -> dict[str, str]:
    """A revision's unit files with each container unit pinned to the digest recorded for
    the installed name it runs under (`installed`: unit → installed name; `pins`: installed
    name → digest reference). Units without a recorded pin are left as written."""
    pinned = dict(units)
    for unit, text in units.items():
        reference = (pins or {}).get(installed[unit])
        if reference is not None and image_of(text) is not None:
            pinned[unit] = pin(text, reference)
    return pinned
