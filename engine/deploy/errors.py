"""The error by which a deploy step says it failed for good.

Any other error in a step is either an outage (retryable: the state stays open and a
later run resumes it) or, in a working state, a failure with that error's message; see
the runner.
"""

from __future__ import annotations

from flotilla.engine.errors import FlotillaError


class StepFailed(FlotillaError):
    """A step failed for good; the deploy goes down the failure path with this reason."""
