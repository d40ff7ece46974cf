"""Ringing several wake-up channels: each one tried, what failed kept by address."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flotilla.engine.errors import FlotillaError


def ring_each(ring: Callable[[str], None], addresses: Sequence[str]) -> dict[str, FlotillaError]:
    """`ring` every address in turn; a failed one does not stop the rest."""
    failed: dict[str, FlotillaError] = {}
    for address in addresses:
        try:
            ring(address)
        except FlotillaError as error:
            failed[address] = error
    return failed
