"""Documents the build files cite exist in the repository: setup.cfg once cited
CONVENTIONS.md and DESIGN.md, which a clone does not have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["setup.cfg", "pyproject.toml", "Makefile"])
def test_every_document_a_build_file_cites_is_in_the_repository(name: str) -> None:
    cited = set(re.findall(r"[\w./-]+\.md\b", (ROOT / name).read_text()))
    missing = {c for c in cited if not (ROOT / c).exists() and not (ROOT / "docs" / c).exists()}
    assert not missing, f"{name} cites {sorted(missing)}, which the repository does not hold"
