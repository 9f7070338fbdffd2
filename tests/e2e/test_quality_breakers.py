"""Batch circuit breakers through whole DAG runs (DAG.test via run_dags) against the sandbox.

After a good full sync, the acme feed is truncated to 40 % of its products: the row-count breaker
trips, the supplier task fails with the numbers in its message, nothing moves on (the Allegro
simulator's offers and the Google feed file are unchanged) and the ledger holds the blocked
decision. Triggered again with the override Param by a named user, the batch goes through and the
ledger shows the override, its reason and who triggered the run.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from commerce_sync.audit.ledger import verify
from commerce_sync.db import connect
from commerce_sync_devtools.demo import DAG_ORDER
from tests.e2e.sandbox_world import World, sandbox_world

pytestmark = pytest.mark.e2e
PUBLISHING = ("hub_to_channel_offers", "hub_to_marketplaces", "hub_to_catalog_feeds")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with sandbox_world(tmp_path_factory.mktemp("e2e-quality")) as world:
        yield world


def _run(dag_ids: tuple[str, ...], logs: Path, *extra: str) -> dict[str, tuple[str, Path]]:
    """Run DAGs in one child process (optionally with --conf/--triggered-by); (state, log) per DAG."""
    logs.mkdir(parents=True, exist_ok=True)
    results = logs / "results.jsonl"
    with (logs / "runner.log").open("wb") as out:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "commerce_sync_devtools.run_dags",
                *("--log-dir", str(logs), "--results", str(results)),
                *extra,
                *dag_ids,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    records = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    return {r["dag_id"]: (r["state"], Path(r["log"])) for r in records}


def _ledger(hub: str, since_seq: int = 0) -> list[dict[str, Any]]:
    with connect(hub) as conn:
        cur = conn.execute(
            "SELECT seq, dag_id, task_id, source, dataset, status, rows_read, rows_rejected, message, details "
            "FROM audit.transfer WHERE seq > %s ORDER BY seq",
            (since_seq,),
        )
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]


def _published_state(world: World) -> tuple[Any, str, Any]:
    """Allegro simulator offers, the Google feed's items and the hub's supplier offers (their versions)."""
    sim = world.server.simulator
    offers = sorted(sim.list_offers(0, 1000)["offers"], key=lambda o: o["external"]["id"])
    feed = world.tmp / "feeds" / "google_merchant.xml"
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    items = sorted(etree.tostring(item) for item in etree.parse(str(feed), parser).getroot().iter("item"))
    with connect(world.hub) as conn:
        hub = conn.execute(
            "SELECT md5(string_agg(concat_ws('|', supplier, supplier_sku, row_hash, version), ',' "
            "ORDER BY supplier, supplier_sku)) FROM hub.supplier_offer"
        ).fetchone()
    return offers, hashlib.sha256(b"\n".join(items)).hexdigest(), hub


def _truncate_feed(path: Path, keep: float) -> tuple[int, int]:
    """Keep the first ``keep`` share of the feed's <product> records; a well-formed, shorter feed."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    tree = etree.parse(str(path), parser)
    records = tree.getroot().findall(".//product")
    kept = int(len(records) * keep)
    for record in records[kept:]:
        record.getparent().remove(record)
    tree.write(str(path), xml_declaration=True, encoding="UTF-8")
    return len(records), kept


def test_truncated_feed_trips_the_row_count_breaker_and_the_override_lets_it_through(world: World) -> None:
    first = _run(DAG_ORDER, world.tmp / "logs-good")
    assert all(state == "success" for state, _ in first.values()), first
    good = [r for r in _ledger(world.hub) if r["source"] == "supplier:acme"]
    assert [r["status"] for r in good] == ["success"]
    assert good[0]["details"]["breakers"]["outcome"] == "passed"
    assert good[0]["details"]["validation"]["rows_quarantined"] == 2
    last_seq = _ledger(world.hub)[-1]["seq"]
    before = _published_state(world)

    total, kept = _truncate_feed(world.tmp / "sandbox" / "feeds" / "acme.xml", 0.4)
    assert good[0]["rows_read"] == total
    blocked_run = _run(("suppliers_to_hub_offers", *PUBLISHING), world.tmp / "logs-truncated")

    # The DAG run itself may end "success": the supply merge downstream runs whatever its suppliers did.
    _, log_file = blocked_run["suppliers_to_hub_offers"]
    log = log_file.read_text(errors="replace")
    drop = round((total - kept) * 100 / total, 2)
    assert "AirflowFailException: supplier 'acme': circuit breaker tripped for supplier_offer from supplier:acme" in log
    assert f"row_count_drop: {drop:g}% > limit 50%" in log
    assert f"{kept:,} rows now vs {total:,} in the last good batch" in log
    assert "override_breakers=true" in log, "the message says how to override"
    assert _published_state(world) == before, "nothing of the truncated batch reached the hub or a channel"

    rows = _ledger(world.hub, last_seq)
    [blocked] = [r for r in rows if r["source"] == "supplier:acme"]
    assert blocked["status"] == "failed"
    assert blocked["rows_read"] == kept
    breakers = blocked["details"]["breakers"]
    assert breakers["outcome"] == "blocked" and breakers["tripped"] == ["row_count_drop"]
    assert breakers["override"] is None
    assert blocked["details"]["data_docs"].endswith("/index.html")
    assert (world.tmp / "data_docs" / blocked["details"]["data_docs"]).is_file()
    assert [r["status"] for r in rows if r["source"] == "supplier:bravo"] == ["success"]
    last_seq = rows[-1]["seq"]

    conf = json.dumps({"override_breakers": True, "override_reason": "acme discontinued 60% of its range"})
    override_run = _run(
        ("suppliers_to_hub_offers",), world.tmp / "logs-override", "--conf", conf, "--triggered-by", "ops.alice"
    )
    assert override_run["suppliers_to_hub_offers"][0] == "success"
    [passed] = [r for r in _ledger(world.hub, last_seq) if r["source"] == "supplier:acme"]
    assert passed["status"] == "success" and passed["rows_read"] == kept
    breakers = passed["details"]["breakers"]
    assert breakers["outcome"] == "overridden" and breakers["tripped"] == ["row_count_drop"]
    assert breakers["override"] == {"by": "ops.alice", "reason": "acme discontinued 60% of its range"}
    with connect(world.hub) as conn:
        active = conn.execute(
            "SELECT count(*) FILTER (WHERE active) FROM hub.supplier_offer WHERE supplier = 'acme'"
        ).fetchone()
        assert verify(conn).ok
    assert active is not None and active[0] == kept - passed["rows_rejected"], "the truncated feed is live"
