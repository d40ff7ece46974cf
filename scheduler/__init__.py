"""Apportionment and rollout policy as pure functions, and the scheduler service loop."""
