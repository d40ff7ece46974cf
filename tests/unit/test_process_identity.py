"""A successor agent can prove its predecessor dead: real processes, real /proc."""

from __future__ import annotations

import subprocess
import sys

from flotilla.adapters import process_identity
from flotilla.adapters.process_identity import current_identity, proven_dead


def identity_of_child() -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [sys.executable, "-c", "from flotilla.adapters.process_identity import current_identity;"
         "import sys, time; print(current_identity(), flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert child.stdout is not None
    return child, child.stdout.readline().strip()


def test_a_live_process_is_not_dead_and_a_killed_one_is() -> None:
    child, identity = identity_of_child()
    try:
        assert not proven_dead(identity)
    finally:
        child.kill()
        child.wait()  # reaped, as systemd reaps a killed agent
        assert child.stdout is not None
        child.stdout.close()
    assert proven_dead(identity)


def test_this_process_is_alive_and_a_reused_pid_is_not_the_same_process() -> None:
    mine = current_identity()
    assert not proven_dead(mine)
    host, boot, pid, start = mine.split("/")
    assert proven_dead(f"{host}/{boot}/{pid}/{int(start) + 1}")  # same pid, another start


def test_another_boot_is_dead_and_another_host_or_an_odd_identity_cannot_be_told() -> None:
    host, _boot, pid, start = current_identity().split("/")
    assert proven_dead(f"{host}/another-boot/{pid}/{start}")
    assert not proven_dead(f"not-{host}/another-boot/{pid}/{start}")
    assert not proven_dead("i-1/host/1234/1700000000000")  # an older agent's owner
    assert not proven_dead("garbage")


def test_the_boot_id_comes_from_the_kernel() -> None:
    assert process_identity.BOOT_ID.read_text().strip() in current_identity()
