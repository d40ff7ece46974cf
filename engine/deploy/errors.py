"""The error by which a deploy step says it failed for good.

Any other error in a step is either an outage (retryable: the state stays open and a
later run resumes it) or, in a working state, a failure with that error's message; see
the runner.
"""

from __future__ import annotations

from flotilla.engine.errors import FlotillaError


class StepFailed(FlotillaError):
    """A step failed for good; the deploy goes down the failure path with this reason."""


class AdoptionRefusedError(FlotillaError):
    """A stored checkpoint, instance item or revision is not what this agent expects (another
    service's, another instance's, another target, or content that does not match its id):
    refused, never deployed, and left untouched for an operator to look at."""
