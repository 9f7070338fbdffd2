"""The simulators' state files: JSON written atomically, so a restarted sandbox shows what was published.

A marketplace keeps what a seller published across days; the demo restarts its sandbox on every
run, and read-back reconciliation would otherwise see every offer reset to its seeded value.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as JSON to ``path`` through a temporary file and a rename (never half-written)."""
    data = json.dumps(state, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: Path | None) -> dict[str, Any] | None:
    """The state saved at ``path`` (None when there is no path or no file yet)."""
    if path is None or not path.exists():
        return None
    loaded = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: a simulator state file holds a JSON object, not {type(loaded).__name__}")
    return loaded
