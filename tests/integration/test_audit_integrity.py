"""Audit integrity against the real PostgreSQL: the application role, audit.change, change digests."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from commerce_sync.audit import changes, ledger
from commerce_sync.db import connect, drop_database
from commerce_sync.pricing.compute import compute_channel_offers
from commerce_sync.sources.erp import sync_erp
from commerce_sync_sandbox.erp import load_erp, set_purchase_price
from tests.conftest import _admin, new_database
from tests.integration.test_erp_load import ERP
from tests.integration.test_erp_load import RUN as ERP_RUN
from tests.integration.test_pricing_compute import ALLEGRO, GOOGLE, RULE, seed_products
from tests.integration.test_pricing_compute import RUN as PRICING_RUN
from tests.integration.test_supplier_load import (  # noqa: F401 - feed_server is a fixture
    FeedServer,
    Served,
    feed_server,
    product,
    sync,
    xml_feed,
    xml_supplier,
)

pytestmark = pytest.mark.integration
APP_ROLE = "commerce_sync_app"


@pytest.fixture
def app_login(hub_dsn: str) -> Iterator[str]:
    """A LOGIN role (unique: roles are cluster-wide) granted commerce_sync_app; its DSN; dropped after."""
    name = f"cs_test_login_{uuid.uuid4().hex[:10]}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(APP_ROLE), sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(hub_dsn, user=name)
    finally:
        with _admin() as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _transfer(n: int) -> ledger.Transfer:
    return ledger.Transfer(source=f"src{n}", target="hub", dataset="product", rows_read=n)


def _insert_change(conn: psycopg.Connection, transfer_id: uuid.UUID, sku: str, new_value: str = "1") -> None:
    conn.execute(
        "INSERT INTO audit.change (transfer_id, dataset, sku, field, old_value, new_value, source_ref) "
        "VALUES (%s, 'product', %s, 'purchase_price', NULL, %s, '{}')",
        (transfer_id, sku, new_value),
    )


# --- the application role ---------------------------------------------------------------------------


def test_migration_role_creation_is_idempotent(hub_dsn: str) -> None:
    # The role exists already (created by the template's migration); applying 0003 again must not fail.
    sql_text = Path(__file__).resolve().parents[2] / "include/commerce_sync/hub/migrations/0003_audit_roles_changes.sql"
    role_block = sql_text.read_text().split("-- Row-level changes")[0]
    with connect(hub_dsn) as conn:
        conn.execute(role_block.encode())
        assert conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone() == (False,)


def test_app_role_appends_to_the_ledger_and_writes_the_hub(app_login: str) -> None:
    with connect(app_login) as conn:
        assert conn.execute("SELECT current_user <> 'postgres'").fetchone() == (True,)
        transfer = _transfer(1)
        _insert_change(conn, transfer.transfer_id, "SKU-1")
        changes.summarise(conn, transfer)
        ledger.append(conn, transfer, "success")
        conn.execute(
            "INSERT INTO hub.quarantine (dataset, source, transfer_id, expectation, reason, raw) "
            "VALUES ('product', 'erp', %s, 'x', 'y', '{}')",
            (transfer.transfer_id,),
        )
        conn.execute("UPDATE hub.quarantine SET status = 'resolved'")
        conn.execute("DELETE FROM hub.quarantine")
    with connect(app_login) as conn:
        assert ledger.verify(conn).ok
        assert conn.execute("SELECT changes_count FROM audit.transfer").fetchone() == (1,)


@pytest.mark.parametrize("table", ["audit.transfer", "audit.change", "audit.change_default"])
@pytest.mark.parametrize("statement", ["UPDATE {} SET dataset = 'x'", "DELETE FROM {}", "TRUNCATE {}"])
def test_app_role_cannot_update_delete_or_truncate_audit(
    app_login: str, hub_dsn: str, table: str, statement: str
) -> None:
    with connect(hub_dsn) as conn:  # a row to aim at, written by the owner
        transfer = _transfer(1)
        _insert_change(conn, transfer.transfer_id, "SKU-1")
        ledger.append(conn, transfer, "success")
    with connect(app_login) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        conn.execute(statement.format(table))


def test_app_role_keeps_partitions_ahead_but_cannot_touch_them(app_login: str) -> None:
    with connect(app_login) as conn:
        assert conn.execute("SELECT audit.ensure_change_partitions(3)").fetchone() == (1,)
    with connect(app_login) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT audit.protect_change_partition('audit.change_default')")
    with connect(app_login) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DROP TABLE audit.change_default")


@pytest.mark.parametrize("table", ["audit.transfer", "audit.change"])
def test_app_role_cannot_disable_the_triggers(app_login: str, table: str) -> None:
    with connect(app_login) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner"):
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
    with connect(app_login) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SET session_replication_role = replica")


# --- audit.change: partitions and append-only --------------------------------------------------------


def test_change_partitions_are_append_only_even_in_replica_mode(hub_dsn: str) -> None:
    with connect(hub_dsn) as conn:
        _insert_change(conn, uuid.uuid4(), "SKU-1")
        conn.execute(
            "INSERT INTO audit.change (recorded_at, transfer_id, dataset, sku, field) "
            "VALUES ('2100-01-15', %s, 'product', 'SKU-2', 'purchase_price')",
            (uuid.uuid4(),),
        )
        partitions = [
            r[0]
            for r in conn.execute(
                "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'audit.change'::regclass ORDER BY 1"
            )
        ]
        located = dict(conn.execute("SELECT sku, tableoid::regclass::text FROM audit.change").fetchall())
        enabled = conn.execute(
            "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger "
            "WHERE tgrelid = ANY(%s::regclass[]) ORDER BY 1, 2",
            (partitions,),
        ).fetchall()
    assert "audit.change_default" in partitions and len(partitions) >= 4  # default + current + 2 ahead
    assert located["SKU-2"] == "audit.change_default"
    assert located["SKU-1"] != "audit.change_default"
    # Both protections on every partition, firing ALWAYS (also with session_replication_role = replica).
    assert {(rel, name) for rel, name, _ in enabled} == {
        (p, t) for p in partitions for t in ("change_refuse_truncate", "change_refuse_update_delete")
    }
    assert {state for _, _, state in enabled} == {"A"}
    for target in ["audit.change", located["SKU-1"], "audit.change_default"]:
        for statement in ("UPDATE {} SET new_value = 'x'", "DELETE FROM {}", "TRUNCATE {}"):
            with connect(hub_dsn) as conn:
                conn.execute("SET session_replication_role = replica")
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                    conn.execute(statement.format(target))


def test_ensure_change_partitions_is_idempotent(hub_dsn: str) -> None:
    with connect(hub_dsn) as conn:
        assert conn.execute("SELECT audit.ensure_change_partitions(2)").fetchone() == (0,)
        assert conn.execute("SELECT audit.ensure_change_partitions(4)").fetchone() == (2,)
        assert conn.execute("SELECT audit.ensure_change_partitions(4)").fetchone() == (0,)


# --- change digests in the ledger ------------------------------------------------------------------


def test_old_style_rows_then_rows_with_change_digests_verify(hub_dsn: str) -> None:
    with connect(hub_dsn) as conn:
        old = [ledger.append(conn, _transfer(i), "success") for i in range(3)]
    # Rows written before 0003 were hashed over HASHED_FIELDS only: recompute the first that way.
    with connect(hub_dsn) as conn:
        stored = conn.execute(
            f"SELECT {', '.join(ledger.HASHED_FIELDS)} FROM audit.transfer WHERE seq = %s", (old[0].seq,)
        ).fetchone()
    assert stored is not None
    payload = {name: ledger._normalise(value) for name, value in zip(ledger.HASHED_FIELDS, stored, strict=True)}
    legacy = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    assert hashlib.sha256((ledger.GENESIS + "\n" + legacy).encode()).hexdigest() == old[0].hash

    with connect(hub_dsn) as conn:
        for i in range(3):
            transfer = _transfer(10 + i)
            for n in range(i + 1):
                _insert_change(conn, transfer.transfer_id, f"SKU-{n}", str(n))
            assert changes.summarise(conn, transfer) == i + 1
            ledger.append(conn, transfer, "success")
    with connect(hub_dsn) as conn:
        assert ledger.verify(conn).ok
        rows = conn.execute(
            "SELECT changes_count, changes_sha256 IS NOT NULL FROM audit.transfer ORDER BY seq"
        ).fetchall()
        assert rows == [(None, False)] * 3 + [(1, True), (2, True), (3, True)]
        # Tampering with a digest breaks the chain at that row.
        conn.execute("ALTER TABLE audit.transfer DISABLE TRIGGER transfer_refuse_update_delete")
        conn.execute("UPDATE audit.transfer SET changes_count = 7 WHERE changes_count = 2")
        conn.execute("ALTER TABLE audit.transfer ENABLE ALWAYS TRIGGER transfer_refuse_update_delete")
    with connect(hub_dsn) as conn:
        result = ledger.verify(conn)
    assert not result.ok and result.first_broken_seq == old[-1].seq + 2


def test_change_digest_is_independent_of_insertion_order(hub_dsn: str) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    with connect(hub_dsn) as conn:
        for sku in ("B", "A", "C"):
            _insert_change(conn, first, sku)
        for sku in ("C", "B", "A"):
            _insert_change(conn, second, sku)
        assert changes.change_digest(conn, str(first)) == changes.change_digest(conn, str(second))
        assert changes.change_digest(conn, str(uuid.uuid4()))[0] == 0


def test_change_digest_is_the_same_at_any_work_mem_and_leaves_the_callers_setting(hub_dsn: str) -> None:
    transfer = uuid.uuid4()
    with connect(hub_dsn) as conn:
        for i in range(3000):  # ~300 kB of row text: more than 64 kB, less than the digest's own sort memory
            _insert_change(conn, transfer, f"SKU-{i:05d}")
        conn.execute("SET LOCAL work_mem = '64kB'")
        expected = changes.change_digest(conn, str(transfer))
        assert conn.execute("SHOW work_mem").fetchone() == ("64kB",)
        conn.execute("SET LOCAL work_mem = '256MB'")  # a larger setting is never lowered
        assert changes.change_digest(conn, str(transfer)) == expected
        assert conn.execute("SHOW work_mem").fetchone() == ("256MB",)
    assert expected[0] == 3000


# --- change rows written by the transfers ------------------------------------------------------------


@pytest.fixture
def erp_dsn() -> Iterator[str]:
    url = new_database()
    load_erp(url, n=30)
    yield url
    drop_database(url)


def _changes(dsn: str, transfer_id: str) -> list[tuple]:
    with connect(dsn) as conn:
        return conn.execute(
            "SELECT dataset, sku, channel, supplier, field, old_value, new_value, rule_id, rule_version, source_ref "
            "FROM audit.change WHERE transfer_id = %s ORDER BY dataset, sku, field",
            (transfer_id,),
        ).fetchall()


def _ledger_digest(dsn: str, transfer_id: str) -> tuple:
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT changes_count, changes_sha256 FROM audit.transfer WHERE transfer_id = %s", (transfer_id,)
        ).fetchone()
        assert row is not None
        assert row == changes.change_digest(conn, transfer_id)
        return tuple(row)


def test_erp_records_purchase_price_changes_in_its_transaction(hub_dsn: str, erp_dsn: str) -> None:
    first = sync_erp(hub_dsn, ERP, erp_dsn, ERP_RUN)
    rows = _changes(hub_dsn, first.transfer_id)
    prices = [r for r in rows if r[4] == "purchase_price"]
    assert len(prices) == 30 and all(r[5] is None for r in prices)
    assert all(r[9]["product_version"] == 1 and r[9]["erp_updated_at"] for r in prices)
    assert _ledger_digest(hub_dsn, first.transfer_id)[0] == len(rows)

    set_purchase_price(erp_dsn, "SKU-000007", Decimal("123.45"))
    second = sync_erp(hub_dsn, ERP, erp_dsn, ERP_RUN)
    rows = _changes(hub_dsn, second.transfer_id)
    assert len(rows) == 1
    dataset, sku, _, _, field, old, new, _, _, ref = rows[0]
    assert (dataset, sku, field, new, ref["product_version"]) == (
        "product",
        "SKU-000007",
        "purchase_price",
        "123.4500",
        2,
    )
    assert old is not None and Decimal(old) != Decimal("123.45")
    assert _ledger_digest(hub_dsn, second.transfer_id)[0] == 1
    third = sync_erp(hub_dsn, ERP, erp_dsn, ERP_RUN)
    assert _changes(hub_dsn, third.transfer_id) == []
    assert _ledger_digest(hub_dsn, third.transfer_id)[0] == 0


def test_supplier_records_price_and_quantity_changes_with_file_and_record(
    hub_dsn: str,
    feed_server: FeedServer,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    feed_server.files["/feeds/acme.xml"] = Served(xml_feed(product("A-1", "1.00", "3"), product("A-2", "2.00", "9")))
    first = sync(hub_dsn, xml_supplier(), feed_server, tmp_path)
    assert len(_changes(hub_dsn, str(first.transfer_id))) == 4
    body = xml_feed(product("A-1", "1.50", "3"))
    feed_server.files["/feeds/acme.xml"] = Served(body)
    second = sync(hub_dsn, xml_supplier(), feed_server, tmp_path)
    rows = _changes(hub_dsn, str(second.transfer_id))
    sha = hashlib.sha256(body).hexdigest()
    assert [(r[1], r[3], r[4], r[5], r[6]) for r in rows] == [
        ("A-1", "acme", "purchase_price", "1.0000", "1.5000"),
        ("A-2", "acme", "quantity", "9", "0"),  # full mode: gone from the feed
    ]
    assert rows[0][9] == {
        "feed": "main",  # which of the supplier's feeds set the field (a single-feed supplier's is "main")
        "file_sha256": sha,
        "record_no": 1,
        "source_line": rows[0][9]["source_line"],
        "gtin": None,
    }
    assert rows[1][9]["deactivated"] is True and rows[1][9]["file_sha256"] == sha
    assert _ledger_digest(hub_dsn, str(second.transfer_id))[0] == 2


def test_pricing_records_channel_changes_matching_the_outbox(hub_dsn: str) -> None:
    seed_products(hub_dsn, 20)
    result = compute_channel_offers(hub_dsn, ALLEGRO, RULE, PRICING_RUN)
    rows = _changes(hub_dsn, result.transfer_id)
    with connect(hub_dsn) as conn:
        outbox = {
            (sku, field): (key, version)
            for sku, field, key, version in conn.execute(
                "SELECT sku, field, idempotency_key, offer_version FROM hub.outbox"
            )
        }
    assert len(rows) == len(outbox) == result.outbox_rows
    for _, sku, channel, _, field, old, new, rule_id, rule_version, ref in rows:
        assert (channel, rule_id, rule_version, old) == ("allegro", RULE.id, str(RULE.version), None)
        assert (ref["idempotency_key"], ref["offer_version"]) == outbox[(sku, field)]
        assert ref["product_version"] == 1 and new is not None
    assert _ledger_digest(hub_dsn, result.transfer_id)[0] == len(rows)

    google = compute_channel_offers(hub_dsn, GOOGLE, RULE, PRICING_RUN)
    rows = _changes(hub_dsn, google.transfer_id)
    assert rows and all(r[2] == "google" and r[9]["idempotency_key"] is None for r in rows)
    again = compute_channel_offers(hub_dsn, ALLEGRO, RULE, PRICING_RUN)
    assert _changes(hub_dsn, again.transfer_id) == []
