"""Running deploys: the runner, the steps it performs, the agent loop that drives it, and
their retry and telemetry helpers. Built on the kernel beside it (records, checkpoint,
ports, errors, clock); the flow itself is decided by `flotilla.machines.deploy`."""
