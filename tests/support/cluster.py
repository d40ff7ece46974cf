"""A small cluster for engine tests: the testbed's (testbed/cluster.py), which the deploy
benchmark shares."""

from __future__ import annotations

from testbed.cluster import BROKEN, SLEEPER, Cluster

__all__ = ["BROKEN", "SLEEPER", "Cluster"]
