"""Entry points: the command line, the composition root, the demo and the trace viewer."""
