"""The daemons' log: one JSON line per event of Flotilla's own, not the state-machine
library's bookkeeping (it was 127 of an agent's 192 lines)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from flotilla.cli.observability import configure_logging
from flotilla.machines.deploy import DeployMachine


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("transitions", "botocore")}
    yield
    root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_the_state_machines_bookkeeping_stays_out_of_the_log(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(json_lines=True)
    machine = DeployMachine(has_load_balancer=False)
    machine.trigger("begin")  # transitions logs "Finished processing state ... callbacks" at INFO
    logging.getLogger("flotilla.engine.deploy.runner").info("deploy i-1.1: pending -> locking")
    logging.getLogger("transitions.core").warning("a real problem")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("flotilla.engine.deploy.runner", "deploy i-1.1: pending -> locking"),
        ("transitions.core", "a real problem"),
    ]
