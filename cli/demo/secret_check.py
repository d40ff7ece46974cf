"""After the demo: the secret put in the revisions' environment must appear nowhere but in
the units' environment files, and those must be readable by their owner only."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SecretReport:
    places_checked: int = 0
    leaks: list[str] = field(default_factory=list)
    env_files: list[Path] = field(default_factory=list)  # where it is expected, mode 0600

    @property
    def clean(self) -> bool:
        return not self.leaks


def check_secret(
    secret: str, work: Path, transcript: list[str], dynamodb: Any, tables: list[str]
) -> SecretReport:
    report = SecretReport()
    needle = secret.encode()
    for path in sorted(p for p in work.rglob("*") if p.is_file()):
        relative = path.relative_to(work)
        if relative.parts[0] == "revisions":
            continue  # the operator's own input files
        report.places_checked += 1
        if needle not in path.read_bytes():
            continue
        if "env" in relative.parts and stat.S_IMODE(path.stat().st_mode) == 0o600:
            report.env_files.append(relative)
        else:
            report.leaks.append(f"file {relative} (mode {stat.S_IMODE(path.stat().st_mode):o})")
    for number, output in enumerate(transcript, 1):
        report.places_checked += 1
        if secret in output:
            report.leaks.append(f"the output of CLI command #{number}")
    for table in tables:
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                report.places_checked += 1
                if secret in repr(item):
                    report.leaks.append(f"an item of table {table}")
    return report
