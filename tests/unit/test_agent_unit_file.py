"""The agent's own systemd unit restarts it always and lets its units outlive it."""

from importlib import resources

from flotilla.engine import validation
from flotilla.engine.units import unit_settings


def test_the_shipped_agent_unit_restarts_always_and_keeps_units_alive() -> None:
    text = resources.files("flotilla.cli").joinpath("flotilla-agent.service").read_text()
    validation.unit_file("flotilla-agent.service", text)
    settings = unit_settings(text)
    service = {key: value for section, key, value in settings if section == "Service"}
    assert service["Restart"] == "always"
    assert service["KillMode"] == "process"  # an agent restart never unloads units
    assert service["KillSignal"] == "SIGTERM"
    assert "flotilla agent" in service["ExecStart"]
