"""The shell entry points honour the environment that scripts/common.sh defines."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ui_sh_passes_every_sandbox_port_to_the_simulators() -> None:
    """Each SANDBOX_<NAME>_PORT of common.sh reaches `sandbox serve` as --<name>-port (issue 16: eBay and
    Amazon were once left at their defaults, so a second checkout's UI talked to the first one's simulators)."""
    common = (REPO / "scripts" / "common.sh").read_text(encoding="utf-8")
    ports = sorted(set(re.findall(r"export (SANDBOX_([A-Z]+)_PORT)=", common)))
    assert {name for _, name in ports} >= {"FEEDS", "ALLEGRO", "EBAY", "AMAZON"}
    ui = (REPO / "scripts" / "ui.sh").read_text(encoding="utf-8").replace("\\\n", " ")
    serve = next(line for line in ui.splitlines() if "sandbox serve" in line)
    for variable, name in ports:
        assert f'--{name.lower()}-port "${variable}"' in serve, variable
