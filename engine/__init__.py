"""The kernel: domain records, ports, errors, validation, the deploy runner and the agent loop."""
