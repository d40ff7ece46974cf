"""The trace viewer: a rollout, or one deploy, as a timeline in the terminal or a web page.

`model` builds one view from either source (the deploy histories in the state store, or
OTLP JSON spans); `terminal` and `html` draw it. Nothing below the entry points imports it.
"""
