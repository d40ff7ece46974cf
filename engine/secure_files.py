"""Writing files that hold secrets: private from the first byte, replaced atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private_file(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600: never readable by others, never half-written."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", text=True)
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
