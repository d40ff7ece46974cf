"""The deploy state machines: states, triggers and guards only (no I/O, no clock, no AWS)."""
