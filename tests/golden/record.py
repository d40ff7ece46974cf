"""Records the golden checkpoints of this version: one stored deploy item per scenario and
state, as this version writes them (see scenarios.py).

    .venv/bin/python -m tests.golden.record

writes tests/golden/checkpoints/machine-v<MACHINE_VERSION>/ (or the folder given as the
argument, e.g. `machine-v2-images`, for a change of the stored checkpoint's shape within
one machine version: the scenarios that folder holds, `Scenario.recorded_in`). Run it
when the deploy machine's version is bumped, and commit the new folder beside the old
ones: the replay test resumes every folder's checkpoints with the current runner, so an
agent that could no longer finish what an earlier version left behind fails a test.
Never rewrite a folder that has been released.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from flotilla.adapters import items
from flotilla.engine.errors import NotFoundError
from flotilla.machines.deploy import MACHINE_VERSION
from tests.golden.scenarios import INSTANCE, SCENARIOS, fixture_path, save


def main() -> int:
    folder = sys.argv[1] if len(sys.argv) > 1 else f"machine-v{MACHINE_VERSION}"
    for scenario in SCENARIOS:
        if not scenario.recorded_in(folder):
            continue
        for state in scenario.crash_states:
            # A fixed folder, so the unit log paths in recorded errors stay the same.
            root = Path(tempfile.gettempdir()) / "flotilla-golden" / f"{scenario.name}-{state}"
            shutil.rmtree(root, ignore_errors=True)
            cluster = scenario.world(root)
            try:
                deploy_id = scenario.stop_in(cluster, state)
                item = items.deploy_to_item(cluster.store.get_deploy(deploy_id))
            except NotFoundError:
                # This version never stores a deploy in that state (`pending`: deploys
                # are created in `locking`); the folders of earlier versions keep theirs.
                print(f"no {state} checkpoint is stored by this version: none recorded")
                continue
            finally:
                cluster.shutdown()
                shutil.rmtree(root, ignore_errors=True)
            assert items.deploy_from_item(item).instance_id == INSTANCE
            path = fixture_path(folder, scenario, state)
            save(path, item)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
