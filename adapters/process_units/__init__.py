"""The parts of the process runtime (adapters/process_runtime.py) that are not the adapter:
the unit-file parser (`spec`), the state file each unit's supervisor writes (`state`) and
the supervisor itself (`supervisor`)."""
