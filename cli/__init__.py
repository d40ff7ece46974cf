"""Entry points: the command line, the composition root, the demo and the trace viewer."""

# The name on the package index (setup.cfg's `name`); the import namespace is `flotilla`.
DISTRIBUTION = "flotilla-deploy"
