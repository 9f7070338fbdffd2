"""The demo runner's bookkeeping: concurrent runs sharing one log directory keep their own results."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from commerce_sync_devtools import demo


def test_concurrent_runs_do_not_share_a_results_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run A writes its result, then run B starts in the same log directory and finishes first.
    With one shared results file, B's start deleted A's result and A reported a false failure."""
    a_written = threading.Event()
    b_done = threading.Event()

    def fake_runner(command: list[str], **kwargs: Any) -> None:
        dag_id = command[-1]
        results = Path(command[command.index("--results") + 1])
        with results.open("a", encoding="utf-8") as out:
            record = {"dag_id": dag_id, "state": "success", "seconds": 1.0, "log": str(tmp_path / f"{dag_id}.log")}
            out.write(json.dumps(record) + "\n")
        if dag_id == "dag_a":
            a_written.set()
            assert b_done.wait(timeout=10)
        else:
            b_done.set()

    monkeypatch.setattr(demo.subprocess, "run", fake_runner)
    outcomes: dict[str, Any] = {}
    run_a = threading.Thread(target=lambda: outcomes.update(a=demo.run_dags(["dag_a"], tmp_path)))
    run_a.start()
    assert a_written.wait(timeout=10)
    outcomes["b"] = demo.run_dags(["dag_b"], tmp_path)
    run_a.join(timeout=10)
    assert outcomes["a"] == [("dag_a", True, 1.0, tmp_path / "dag_a.log")]
    assert outcomes["b"] == [("dag_b", True, 1.0, tmp_path / "dag_b.log")]
    assert not list(tmp_path.glob("results*.jsonl")), "each run removes its own results file"
    assert len(list(tmp_path.glob("runner-*.log"))) == 2, "one runner log per run"
