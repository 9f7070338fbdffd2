"""Trace one published offer back to the transfers, source rows and rule that produced it.

:func:`trace_offer` answers "where did the price and stock that channel X shows for SKU Y come
from?" with a JSON-serialisable dict (shape documented on the function). Every link it cannot
establish is listed in ``gaps``; it never drops a missing link silently. All reads are a fixed
number of set-based queries, whatever the history length.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

TRANSFER_COLUMNS = (
    "seq",
    "transfer_id",
    "run_id",
    "dag_id",
    "task_id",
    "try_number",
    "map_index",
    "source",
    "target",
    "dataset",
    "status",
    "payload_sha256",
    "rows_changed",
    "changes_count",
    "changes_sha256",
    "started_at",
    "finished_at",
    "hash",
)
CHANGE_COLUMNS = (
    "change_id",
    "recorded_at",
    "transfer_id",
    "dataset",
    "sku",
    "channel",
    "supplier",
    "field",
    "old_value",
    "new_value",
    "rule_id",
    "rule_version",
    "source_ref",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    return value


def _rows(conn: psycopg.Connection, query: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [dict(row) for row in cur.fetchall()]


def _one(conn: psycopg.Connection, query: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
    rows = _rows(conn, query, params)
    return rows[0] if rows else None


_CHANGE_SELECT = ", ".join(f"c.{name}" for name in CHANGE_COLUMNS)

_OUTBOX = """
SELECT id AS outbox_id, field, payload, offer_version, idempotency_key, status, attempts, request_id, error,
       created_at, sent_at, created_transfer_id, sent_transfer_id
FROM hub.outbox
WHERE channel = %(channel)s AND sku = %(sku)s AND (%(at)s::timestamptz IS NULL OR created_at <= %(at)s)
ORDER BY id
"""

_CHANNEL_CHANGES = f"""
SELECT {_CHANGE_SELECT} FROM audit.change AS c
WHERE c.dataset = 'channel_offer' AND c.channel = %(channel)s AND c.sku = %(sku)s
  AND (%(at)s::timestamptz IS NULL OR c.recorded_at <= %(at)s)
ORDER BY c.recorded_at, c.change_id
"""

_PRODUCT_CHANGES = f"""
SELECT {_CHANGE_SELECT} FROM audit.change AS c
WHERE c.dataset IN ('product', 'stock') AND c.sku = %(sku)s
  AND (%(at)s::timestamptz IS NULL OR c.recorded_at <= %(at)s)
ORDER BY c.recorded_at, c.change_id
"""

_SUPPLIER_OFFERS = """
SELECT supplier, supplier_sku, gtin, purchase_price, currency, quantity, active, version,
       source_file_sha256 AS file_sha256, source_record_no AS record_no, source_line, updated_at, transfer_id
FROM hub.supplier_offer WHERE gtin = %(gtin)s ORDER BY supplier, supplier_sku
"""

_SUPPLIER_CHANGES = f"""
SELECT {_CHANGE_SELECT} FROM audit.change AS c
JOIN hub.supplier_offer AS o ON o.supplier = c.supplier AND o.supplier_sku = c.sku
WHERE c.dataset = 'supplier_offer' AND o.gtin = %(gtin)s
  AND (%(at)s::timestamptz IS NULL OR c.recorded_at <= %(at)s)
ORDER BY c.recorded_at, c.change_id
"""

_FEED_TRANSFER = """
SELECT transfer_id, payload_sha256, details, finished_at FROM audit.transfer
WHERE target = %(target)s AND status = 'success' AND details ? 'path'
  AND (%(at)s::timestamptz IS NULL OR finished_at <= %(at)s)
ORDER BY seq DESC LIMIT 1
"""


def _latest_by(rows: Iterable[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The last row (input order) per key."""
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        latest[tuple(row[k] for k in keys)] = row
    return latest


def trace_offer(conn: psycopg.Connection, channel: str, sku: str, at: datetime | None = None) -> dict[str, Any]:
    """Trace what ``channel`` shows (or showed at ``at``) for ``sku`` back to its sources.

    Args:
        conn: the hub database.
        channel: channel id, e.g. ``"allegro"`` (outbox channel) or ``"google"`` (feed channel).
        sku: our SKU.
        at: trace the state at this time (timezone-aware); None for now.

    Returns:
        A JSON-serialisable dict (datetimes ISO 8601, decimals and UUIDs as strings)::

            {
              "channel": str, "sku": str, "at": str | None,
              "kind": "outbox" | "feed" | "unknown",
              "published": {                     # what the channel got
                  "fields": {                    # outbox channels: latest sent row per field
                      "price" | "quantity": {"value": payload, "offer_version", "outbox_id",
                          "request_id" (the command id), "idempotency_key", "sent_at",
                          "sent_transfer_id", "created_transfer_id",
                          "rule_id", "rule_version", "old_value", "new_value",
                          "rule_source": "audit.change" | "hub.channel_offer" | None}},
                  "feed": {"path", "sha256", "item_count", "written_at", "transfer_id"} | None,
              },
              "outbox": [outbox rows of this channel and SKU, oldest first],
              "offer": {current hub.channel_offer row + "changes": [audit.change rows]} | None,
              "offer_version": int | None,       # the version that was published
              "product": {"sku", "gtin", "name", "purchase_price", "active", "version",
                          "erp_updated_at", "updated_at", "transfer_id",
                          "version_used_by_offer", "changes": [audit.change rows]} | None,
              "stock": [{"location", "quantity", "reserved", "version", "updated_at", "transfer_id"}],
              "supplier_offers": [{"supplier", "supplier_sku", "gtin", "purchase_price", "currency",
                                   "quantity", "active", "version", "file_sha256", "record_no",
                                   "source_line", "updated_at", "transfer_id",
                                   "changes": [audit.change rows]}],
              "transfers": [{"seq", "transfer_id", "run_id", "dag_id", "task_id", "try_number",
                             "map_index", "source", "target", "dataset", "status",
                             "payload_sha256", "rows_changed", "changes_count", "changes_sha256",
                             "started_at", "finished_at", "hash", "referenced_by": [str]}],
              "gaps": [str],                     # every link that could not be established
            }
    """
    params: dict[str, Any] = {"channel": channel, "sku": sku, "at": at}
    gaps: list[str] = []
    refs: dict[str, list[str]] = {}

    def ref(transfer_id: Any, what: str) -> None:
        if transfer_id is None:
            gaps.append(f"{what}: no transfer id recorded")
            return
        refs.setdefault(str(transfer_id), []).append(what)

    offer = _one(conn, "SELECT * FROM hub.channel_offer WHERE channel = %(channel)s AND sku = %(sku)s", params)
    outbox = _rows(conn, _OUTBOX, params)
    channel_changes = _rows(conn, _CHANNEL_CHANGES, params)
    feed_state = _one(conn, "SELECT * FROM hub.feed_state WHERE channel = %(channel)s", params)
    has_outbox = _one(conn, "SELECT 1 AS found FROM hub.outbox WHERE channel = %(channel)s LIMIT 1", params)
    kind = "feed" if feed_state is not None else "outbox" if has_outbox else "unknown"
    if offer is None:
        gaps.append(f"no channel offer for channel {channel!r}, SKU {sku!r} in hub.channel_offer")
    else:
        ref(offer["transfer_id"], "channel offer (last computed)")

    # What the channel got.
    change_by_version = {(c["field"], str((c["source_ref"] or {}).get("offer_version"))): c for c in channel_changes}

    def rule_of(field: str, version: int) -> dict[str, Any]:
        change = change_by_version.get((field, str(version)))
        if change is not None:
            ref(change["transfer_id"], f"{field} change to offer version {version}")
            return {
                "rule_id": change["rule_id"],
                "rule_version": change["rule_version"],
                "old_value": change["old_value"],
                "new_value": change["new_value"],
                "change_id": change["change_id"],
                "rule_source": "audit.change",
            }
        if offer is not None and int(offer["version"]) == version:
            return {
                "rule_id": offer["rule_id"],
                "rule_version": offer["rule_version"],
                "rule_source": "hub.channel_offer",
            }
        gaps.append(
            f"{field}: no rule recorded for offer version {version} (no audit.change row, not the current offer)"
        )
        return {"rule_id": None, "rule_version": None, "rule_source": None}

    published: dict[str, Any] = {"fields": {}, "feed": None}
    offer_version: int | None = None
    if kind == "feed":
        feed_transfer = _one(conn, _FEED_TRANSFER, {"target": f"channel:{channel}", "at": at})
        if feed_transfer is None:
            gaps.append(f"no successful feed write for channel {channel!r} at or before the trace time")
        else:
            details = feed_transfer["details"] or {}
            published["feed"] = {
                "path": details.get("path"),
                "sha256": feed_transfer["payload_sha256"],
                "item_count": details.get("item_count"),
                "written_at": feed_transfer["finished_at"],
                "transfer_id": feed_transfer["transfer_id"],
            }
            ref(feed_transfer["transfer_id"], "feed file written")
            written = feed_transfer["finished_at"]
            for field in ("price", "quantity"):
                earlier = [c for c in channel_changes if c["field"] == field and c["recorded_at"] <= written]
                if earlier:
                    version = int(earlier[-1]["source_ref"]["offer_version"])
                    value: Any = earlier[-1]["new_value"]
                elif offer is not None and offer["computed_at"] <= written:
                    version, value = int(offer["version"]), offer[field]
                else:
                    gaps.append(f"{field}: no offer version computed before the feed file was written")
                    continue
                offer_version = max(offer_version or 0, version)
                published["fields"][field] = {"value": value, "offer_version": version, **rule_of(field, version)}
    elif kind == "outbox":
        sent = [row for row in outbox if row["status"] == "sent" and (at is None or row["sent_at"] <= at)]
        latest = _latest_by(sorted(sent, key=lambda r: (r["offer_version"], r["outbox_id"])), "field")
        for field in ("price", "quantity"):
            row = latest.get((field,))
            if row is None:
                gaps.append(
                    f"{field}: no sent outbox row for channel {channel!r}, SKU {sku!r}"
                    + (f" at or before {at.isoformat()}" if at else "")
                )
                continue
            version = int(row["offer_version"])
            offer_version = max(offer_version or 0, version)
            published["fields"][field] = {
                "value": row["payload"],
                "offer_version": version,
                "outbox_id": row["outbox_id"],
                "request_id": row["request_id"],
                "idempotency_key": row["idempotency_key"],
                "sent_at": row["sent_at"],
                "sent_transfer_id": row["sent_transfer_id"],
                "created_transfer_id": row["created_transfer_id"],
                **rule_of(field, version),
            }
            change = change_by_version.get((field, str(version)))
            if change is not None and (change["source_ref"] or {}).get("idempotency_key") != row["idempotency_key"]:
                gaps.append(f"{field}: outbox idempotency key differs from the recorded change of version {version}")
            ref(row["sent_transfer_id"], f"{field} sent to channel")
            ref(row["created_transfer_id"], f"{field} outbox row created")
    else:
        gaps.append(f"channel {channel!r} has neither outbox rows nor a feed state: nothing was published")

    # The product and own stock (ERP).
    product = _one(
        conn,
        "SELECT sku, gtin, name, purchase_price, currency, active, version, source_updated_at AS erp_updated_at, "
        "updated_at, transfer_id FROM hub.product WHERE sku = %(sku)s",
        params,
    )
    product_changes = _rows(conn, _PRODUCT_CHANGES, params)
    if product is None:
        gaps.append(f"SKU {sku!r} is not in hub.product")
    else:
        ref(product["transfer_id"], "product version (ERP)")
        if product["erp_updated_at"] is None:
            gaps.append(f"product {sku}: no ERP updated_at recorded")
        used = [
            c["source_ref"].get("product_version")
            for c in channel_changes
            if offer_version is not None and str(c["source_ref"].get("offer_version")) == str(offer_version)
        ]
        product["version_used_by_offer"] = next((v for v in used if v is not None), None)
        product["changes"] = [c for c in product_changes if c["dataset"] == "product"]
        if at is not None and product["updated_at"] > at and not product["changes"]:
            gaps.append(f"product {sku}: changed after the trace time and no earlier change row is recorded")
        for change in product["changes"]:
            ref(change["transfer_id"], f"product {change['field']} change")
    stock = _rows(
        conn,
        "SELECT location, quantity, reserved, version, updated_at, transfer_id FROM hub.stock "
        "WHERE sku = %(sku)s ORDER BY location",
        params,
    )
    for row in stock:
        ref(row["transfer_id"], f"own stock at {row['location']}")
        row["changes"] = [
            c for c in product_changes if c["dataset"] == "stock" and c["source_ref"].get("location") == row["location"]
        ]

    # Supplier offers matched by GTIN.
    supplier_offers: list[dict[str, Any]] = []
    if product is not None and product["gtin"]:
        gparams = {"gtin": product["gtin"], "at": at}
        supplier_offers = _rows(conn, _SUPPLIER_OFFERS, gparams)
        supplier_changes = _rows(conn, _SUPPLIER_CHANGES, gparams)
        for offer_row in supplier_offers:
            name = f"supplier offer {offer_row['supplier']}/{offer_row['supplier_sku']}"
            ref(offer_row["transfer_id"], name)
            offer_row["changes"] = [
                c
                for c in supplier_changes
                if c["supplier"] == offer_row["supplier"] and c["sku"] == offer_row["supplier_sku"]
            ]
            if offer_row["file_sha256"] is None:
                gaps.append(f"{name}: no feed file checksum recorded")
            if offer_row["record_no"] is None:
                gaps.append(f"{name}: no feed record number recorded")

    # Every transfer referenced, from the ledger.
    transfers = _rows(
        conn,
        f"SELECT {', '.join(TRANSFER_COLUMNS)} FROM audit.transfer WHERE transfer_id = ANY(%(ids)s::uuid[]) "
        "ORDER BY seq",
        {"ids": sorted(refs)},
    )
    found = {str(t["transfer_id"]) for t in transfers}
    for transfer in transfers:
        transfer["referenced_by"] = refs[str(transfer["transfer_id"])]
    for transfer_id, whats in sorted(refs.items()):
        if transfer_id not in found:
            gaps.append(f"transfer {transfer_id} ({', '.join(whats)}) is not in the audit ledger")
    by_id = {str(t["transfer_id"]): t for t in transfers}
    for offer_row in supplier_offers:
        loaded_by = by_id.get(str(offer_row["transfer_id"]))
        if loaded_by is not None and offer_row["file_sha256"] != loaded_by["payload_sha256"]:
            gaps.append(
                f"supplier offer {offer_row['supplier']}/{offer_row['supplier_sku']}: file checksum differs from "
                f"its transfer's payload sha256"
            )

    if offer is not None:
        offer = {**offer, "changes": channel_changes}
    return _jsonable(
        {
            "channel": channel,
            "sku": sku,
            "at": at,
            "kind": kind,
            "published": published,
            "outbox": outbox,
            "offer": offer,
            "offer_version": offer_version,
            "product": product,
            "stock": stock,
            "supplier_offers": supplier_offers,
            "transfers": transfers,
            "gaps": gaps,
        }
    )


def format_trace(trace: Mapping[str, Any]) -> str:
    """An indented, human-readable view of a :func:`trace_offer` result."""
    lines = [f"{trace['channel']} / {trace['sku']}" + (f" at {trace['at']}" if trace["at"] else "")]
    published = trace["published"]
    if published.get("feed"):
        feed = published["feed"]
        lines.append(f"  feed {feed['path']} sha256 {feed['sha256']} written {feed['written_at']}")
    for field, item in published["fields"].items():
        value = item.get("value")
        lines.append(
            f"  {field}: {value if value is not None else item.get('new_value')} "
            f"(offer v{item['offer_version']}, rule {item.get('rule_id')} v{item.get('rule_version')})"
        )
        if item.get("request_id"):
            lines.append(f"    sent {item['sent_at']} command {item['request_id']} key {item['idempotency_key']}")
    product = trace["product"]
    if product:
        lines.append(
            f"  product v{product['version']} purchase price {product['purchase_price']} "
            f"(ERP updated {product['erp_updated_at']}, offer used v{product['version_used_by_offer']})"
        )
    for row in trace["stock"]:
        lines.append(f"  stock {row['location']}: {row['quantity']} (reserved {row['reserved']})")
    for row in trace["supplier_offers"]:
        lines.append(
            f"  supplier {row['supplier']}/{row['supplier_sku']}: {row['purchase_price']} x {row['quantity']} "
            f"file {row['file_sha256']} record {row['record_no']} line {row['source_line']}"
        )
    lines.append("  transfers:")
    for t in trace["transfers"]:
        lines.append(
            f"    #{t['seq']} {t['dag_id']}.{t['task_id']} run {t['run_id']} {t['source']} -> {t['target']} "
            f"payload {t['payload_sha256']} ({'; '.join(t['referenced_by'])})"
        )
    lines.append("  gaps: " + ("none" if not trace["gaps"] else ""))
    lines.extend(f"    - {gap}" for gap in trace["gaps"])
    return "\n".join(lines)
