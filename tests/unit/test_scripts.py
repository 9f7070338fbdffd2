"""The shell entry points honour the environment that scripts/common.sh defines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from commerce_sync_sandbox.__main__ import _parser
from commerce_sync_sandbox.simulators import simulators

REPO = Path(__file__).resolve().parents[2]


def test_every_sandbox_port_of_common_sh_reaches_the_simulators(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each SANDBOX_<NAME>_PORT of common.sh reaches `sandbox serve` (issue 16: eBay and Amazon were once left
    at their defaults, so a second checkout's UI talked to the first one's simulators): start_sandbox passes
    the feeds port, and every simulator's ``--<name>-port`` defaults to its variable, which common.sh exports."""
    common = (REPO / "scripts" / "common.sh").read_text(encoding="utf-8")
    exported = set(re.findall(r"export (SANDBOX_[A-Z]+_PORT)=", common))
    specs = simulators()
    assert {spec.name for spec in specs} >= {"allegro", "ebay", "amazon"}
    assert {spec.port_variable for spec in specs} | {"SANDBOX_FEEDS_PORT"} == exported
    serve = next(line for line in common.replace("\\\n", " ").splitlines() if "sandbox serve" in line)
    assert '--feeds-port "$SANDBOX_FEEDS_PORT"' in serve
    for number, spec in enumerate(specs):
        monkeypatch.setenv(spec.port_variable, str(9100 + number))
    args = _parser().parse_args(["serve"])
    for number, spec in enumerate(specs):
        assert getattr(args, f"{spec.name}_port") == 9100 + number, spec.port_variable
    for script in ("ui.sh", "celery.sh"):  # both start the sandbox through common.sh's start_sandbox
        lines = (REPO / "scripts" / script).read_text(encoding="utf-8").splitlines()
        assert "start_sandbox" in lines and not any("sandbox serve" in line for line in lines), script
