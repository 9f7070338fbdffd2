"""Render a results JSON of ``bench/run.py`` as Markdown tables (for ``bench/README.md``).

Usage: ``python bench/report.py [bench/results/latest.json]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def stage_table(results: list[dict[str, Any]], n: int) -> str:
    lines = [
        "| phase | stage | wall s | rows | rows/s | peak RSS MB | client CPU s | DB active s | WAL MB "
        "| changed | parts |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if r["n"] != n:
            continue
        parts = ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in (r.get("parts") or {}).items())
        if r["phase"] == "naive":
            parts = f"idiom timed {r['timed_seconds']:.2f}s on the sample, RSS +{r['rss_growth_mb']} MB"
        lines.append(
            f"| {r['phase']} | {r['stage']} | {r['seconds']:.2f} | {_fmt(r['rows'])} | {_fmt(r.get('rows_per_s'))} "
            f"| {r['peak_rss_mb']:.0f} | {r['client_cpu_s']:.1f} | {r['db_active_s']:.1f} | {r['wal_mb']:.0f} "
            f"| {_fmt(r.get('changed'))} | {parts} |"
        )
    return "\n".join(lines)


def scaling_table(results: list[dict[str, Any]]) -> str:
    sizes = sorted({r["n"] for r in results})
    stages = []
    for r in results:
        if r["phase"] in ("full", "floor") and (r["phase"], r["stage"]) not in stages:
            stages.append((r["phase"], r["stage"]))
    head = "| phase | stage | " + " | ".join(f"N={s:,}: s / MB" for s in sizes) + " |"
    lines = [head, "|---|---|" + "---:|" * len(sizes)]
    for phase, stage in stages:
        cells = []
        for size in sizes:
            match = [r for r in results if r["n"] == size and r["phase"] == phase and r["stage"] == stage]
            cells.append(f"{match[0]['seconds']:.1f} / {match[0]['peak_rss_mb']:.0f}" if match else "-")
        lines.append(f"| {phase} | {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "latest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    print(f"Measured {data['when']} on {data['machine']}\n")
    print(stage_table(data["results"], data["n"]))
    print()
    print(scaling_table(data["results"]))
    print()
    for key, value in data["ratios"].items():
        print(f"- {key}: {_fmt(value)}")
    print()
    for key, met in data["targets_met"].items():
        print(f"- {'met' if met else '**missed**'}: {key}")


if __name__ == "__main__":
    main()
