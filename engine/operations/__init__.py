"""What an operator does to a service, as engine operations against the ports.

`steering` sets weights, pauses, resumes and reverts (the CLI only parses, calls and
prints); `names` finds the services and revisions an operator names and shows weights by
label; `rules` holds what the scheduler's own auto-revert shares with the operator's
revert, so the two cannot drift apart. The scheduler imports `rules` and `names`; nothing
here imports the scheduler.
"""
