"""The agent's own systemd unit restarts it always, lets its units outlive it, and counts
as started only once the agent says it registered (sd_notify)."""

from importlib import resources

from flotilla.engine import validation
from flotilla.engine.unit_syntax import unit_settings


def test_the_shipped_agent_unit_restarts_always_and_keeps_units_alive() -> None:
    text = resources.files("flotilla.cli").joinpath("flotilla-agent.service").read_text()
    validation.unit_file("flotilla-agent.service", text)
    settings = unit_settings(text)
    service = {key: value for section, key, value in settings if section == "Service"}
    assert service["Restart"] == "always"
    assert service["KillMode"] == "process"  # an agent restart never unloads units
    assert service["KillSignal"] == "SIGTERM"
    assert "flotilla agent" in service["ExecStart"]


def test_the_shipped_agent_unit_is_started_when_the_agent_says_so() -> None:
    text = resources.files("flotilla.cli").joinpath("flotilla-agent.service").read_text()
    settings = [(key, value) for section, key, value in unit_settings(text) if section == "Service"]
    service = dict(settings)
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"  # only the agent itself, not the units it starts
    assert int(service["TimeoutStartSec"]) >= 120  # a slow first contact with AWS
    # Machine-local settings first, so the agent's own file can override them.
    files = [value for key, value in settings if key == "EnvironmentFile"]
    assert files == ["-/etc/default/flotilla", "-/etc/flotilla/agent.env"]
    assert service["RuntimeDirectory"] == "flotilla"
