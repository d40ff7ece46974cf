"""Wheels for the tests: small synthetic ones, and the real one built from the checkout.

The synthetic wheel is written here with zipfile alone, not with the code under test
(cli.running_wheel), so a test of that code cannot pass because both share a mistake.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def synthetic_wheel(
    folder: Path,
    *,
    name: str = "flotilla-deploy",
    version: str = "0.1.0",
    file_name: str | None = None,
    extra: bytes = b"",
    requires: tuple[str, ...] = (),
) -> Path:
    """A zip holding `<name>-<version>.dist-info/METADATA` (and WHEEL); `extra` changes
    its bytes, and so its sha256; `requires` are its Requires-Dist."""
    escaped = name.replace("-", "_")
    path = folder / (file_name or f"{escaped}-{version}-py3-none-any.whl")
    info = f"{escaped}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            f"{info}/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires),
        )
        archive.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr("flotilla_synthetic.py", b"# a test wheel\n" + extra)
    return path


def build_checkout_wheel(folder: Path) -> Path:
    """`python -m build --wheel` of this checkout into `folder`: the wheel as it ships."""
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(folder), str(ROOT)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = folder.glob("flotilla_deploy-*-py3-none-any.whl")
    return wheel
