"""The shell entry points honour the environment that scripts/common.sh defines."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_sandbox_gets_every_sandbox_port() -> None:
    """Each SANDBOX_<NAME>_PORT of common.sh reaches `sandbox serve` as --<name>-port (issue 16: eBay and
    Amazon were once left at their defaults, so a second checkout's UI talked to the first one's simulators)."""
    common = (REPO / "scripts" / "common.sh").read_text(encoding="utf-8")
    ports = sorted(set(re.findall(r"export (SANDBOX_([A-Z]+)_PORT)=", common)))
    assert {name for _, name in ports} >= {"FEEDS", "ALLEGRO", "EBAY", "AMAZON"}
    serve = next(line for line in common.replace("\\\n", " ").splitlines() if "sandbox serve" in line)
    for variable, name in ports:
        assert f'--{name.lower()}-port "${variable}"' in serve, variable
    for script in ("ui.sh", "celery.sh"):  # both start the sandbox through common.sh's start_sandbox
        lines = (REPO / "scripts" / script).read_text(encoding="utf-8").splitlines()
        assert "start_sandbox" in lines and not any("sandbox serve" in line for line in lines), script
