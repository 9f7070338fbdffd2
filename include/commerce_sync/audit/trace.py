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
from psycopg import sql
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


def _rows(conn: psycopg.Connection, query: str | sql.Composed, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [dict(row) for row in cur.fetchall()]


def _one(conn: psycopg.Connection, query: str | sql.Composed, params: Mapping[str, Any]) -> dict[str, Any] | None:
    rows = _rows(conn, query, params)
    return rows[0] if rows else None


_CHANGE_SELECT = sql.SQL(", ").join(sql.Identifier("c", name) for name in CHANGE_COLUMNS)

_OUTBOX = """
SELECT id AS outbox_id, field, payload, offer_version, idempotency_key, status, attempts, request_id, error,
       created_at, sent_at, created_transfer_id, sent_transfer_id
FROM hub.outbox
WHERE channel = %(channel)s AND sku = %(sku)s AND (%(at)s::timestamptz IS NULL OR created_at <= %(at)s)
ORDER BY id
"""

_CHANNEL_CHANGES = sql.SQL("""
SELECT {columns} FROM audit.change AS c
WHERE c.dataset = 'channel_offer' AND c.channel = %(channel)s AND c.sku = %(sku)s
  AND (%(at)s::timestamptz IS NULL OR c.recorded_at <= %(at)s)
ORDER BY c.recorded_at, c.change_id
""").format(columns=_CHANGE_SELECT)

_PRODUCT_CHANGES = sql.SQL("""
SELECT {columns} FROM audit.change AS c
WHERE c.dataset IN ('product', 'stock') AND c.sku = %(sku)s
  AND (%(at)s::timestamptz IS NULL OR c.recorded_at <= %(at)s)
ORDER BY c.recorded_at, c.change_id
""").format(columns=_CHANGE_SELECT)

_SUPPLIER_OFFERS = """
SELECT supplier, supplier_sku, gtin, purchase_price, currency, quantity, active, version,
       source_file_sha256 AS file_sha256, source_record_no AS record_no, source_line, updated_at, transfer_id
FROM hub.supplier_offer WHERE gtin = %(gtin)s ORDER BY supplier, supplier_sku
"""

_SUPPLIER_CHANGES = sql.SQL("""
SELECT {columns} FROM audit.change AS c
JOIN hub.supplier_offer AS o ON o.supplier = c.supplier AND o.supplier_sku = c.sku
WHERE c.dataset = 'supplier_offer' AND o.gtin = %(gtin)s
  AND (%(at)s::timestamptz IS NULL OR c.recorded_at <= %(at)s)
ORDER BY c.recorded_at, c.change_id
""").format(columns=_CHANGE_SELECT)

_FEED_TRANSFER = """
SELECT transfer_id, payload_sha256, details, finished_at FROM audit.transfer
WHERE target = %(target)s AND status = 'success' AND details ? 'path'
  AND (%(at)s::timestamptz IS NULL OR finished_at <= %(at)s)
ORDER BY seq DESC LIMIT 1
"""

_TRANSFERS = sql.SQL(
    "SELECT {columns} FROM audit.transfer WHERE transfer_id = ANY(%(ids)s::uuid[]) ORDER BY seq"
).format(columns=sql.SQL(", ").join(sql.Identifier(name) for name in TRANSFER_COLUMNS))

# What moved the SKU's available quantity: reservations and ERP hand-offs of order lines (dataset
# 'order'), own stock and the product (ERP). recorded_at is the writing transaction's start.
_INPUT_CHANGES = sql.SQL("""
SELECT {columns} FROM audit.change AS c
WHERE c.dataset IN ('order', 'product', 'stock') AND c.sku = %(sku)s
  AND (c.dataset <> 'order' OR c.field IN ('reservation', 'erp_state'))
  AND (%(at)s::timestamptz IS NULL OR c.recorded_at <= %(at)s)
ORDER BY c.recorded_at, c.change_id
""").format(columns=_CHANGE_SELECT)

# The hub's reservations of the SKU with their orders (now), reserved at or before the counting time.
_RESERVATIONS = """
SELECT r.channel, r.order_id, r.line_id, r.quantity, r.state, r.oversold, r.available_at_reservation,
       r.created_at AS reserved_at, r.erp_booked_at, r.released_at, r.transfer_id,
       o.status AS order_status, o.marketplace_status, o.first_seen_at, o.erp_state, o.erp_key, o.erp_handed_at,
       o.erp_error, o.erp_transfer_id
FROM hub.stock_reservation AS r
JOIN hub.sales_order AS o ON o.channel = r.channel AND o.order_id = r.order_id
WHERE r.sku = %(sku)s AND r.created_at <= %(until)s
ORDER BY r.created_at, r.channel, r.order_id, r.line_id
"""


def _latest_by(rows: Iterable[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The last row (input order) per key."""
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        latest[tuple(row[k] for k in keys)] = row
    return latest


def _timestamp(value: Any) -> datetime | None:
    """A timestamp read from JSON (ISO text) or from a column; None when absent or not one."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _line_key(change: Mapping[str, Any]) -> tuple[str, str, str]:
    ref = change["source_ref"] or {}
    return (str(change["channel"]), str(ref.get("order_id")), str(ref.get("line_id")))


def _state_units(value: str | None) -> tuple[str | None, int | None]:
    """``"held 2"`` -> ``("held", 2)``: how order.store / order.erp write a reservation's value."""
    state, _, units = (value or "").partition(" ")
    return state or None, int(units) if units.isdigit() else None


def _quantity_basis(
    offer: Mapping[str, Any] | None,
    published: Mapping[str, Any],
    quantity_changes: list[dict[str, Any]],
    change_by_version: Mapping[tuple[str, str], dict[str, Any]],
    at: datetime | None,
) -> tuple[dict[str, Any] | None, Any, datetime]:
    """The quantity change row the traced quantity comes from, that quantity, and when it was computed."""
    item = published["fields"].get("quantity")
    change = None
    if item is not None:
        change = change_by_version.get(("quantity", str(item["offer_version"])))
    elif quantity_changes:
        change = quantity_changes[-1]
    if change is not None:
        return change, change["new_value"], change["recorded_at"]
    value = item.get("value") if item is not None else None
    if isinstance(value, Mapping):
        value = value.get("value")
    if offer is not None and (at is None or offer["computed_at"] <= at):
        return None, value if item is not None else offer["quantity"], offer["computed_at"]
    return None, value, at or datetime.now().astimezone()


def _explain_quantity_changes(
    quantity_changes: list[dict[str, Any]],
    inputs: list[dict[str, Any]],
    supplier_changes: list[dict[str, Any]],
    until: datetime,
    gaps: list[str],
) -> list[dict[str, Any]]:
    """Each quantity change row up to ``until`` with the recorded input changes since the one before it."""
    history: list[dict[str, Any]] = []
    prev: dict[str, Any] | None = None
    for change in (c for c in quantity_changes if c["recorded_at"] <= until):
        since = prev["recorded_at"] if prev is not None else None
        window = [
            c
            for c in (*inputs, *supplier_changes)
            if (since is None or c["recorded_at"] > since) and c["recorded_at"] <= change["recorded_at"]
        ]
        reasons: list[str] = []
        if change["old_value"] is None:
            reasons.append("first quantity of the offer")
        for c in window:
            ref = c["source_ref"] or {}
            if c["dataset"] == "order" and c["field"] == "reservation":
                reasons.append(
                    f"order {c['channel']}:{ref.get('order_id')} line {ref.get('line_id')}: reservation "
                    f"{c['old_value'] or '(new)'} -> {c['new_value']}"
                )
            elif c["dataset"] == "stock":
                reasons.append(f"own stock {ref.get('location')} {c['field']} {c['old_value']} -> {c['new_value']}")
            elif c["dataset"] == "product":
                reasons.append(f"product {c['field']} {c['old_value']} -> {c['new_value']}")
            elif c["dataset"] == "supplier_offer":
                reasons.append(
                    f"supplier offer {c['supplier']}/{c['sku']} {c['field']} {c['old_value']} -> {c['new_value']}"
                )
        now_ref, prev_ref = change["source_ref"] or {}, (prev["source_ref"] or {}) if prev is not None else {}
        versions = (prev_ref.get("product_version"), now_ref.get("product_version"))
        if None not in versions and versions[0] != versions[1]:
            reasons.append(f"product version {prev_ref.get('product_version')} -> {now_ref.get('product_version')}")
        if prev is not None and (change["rule_id"], change["rule_version"]) != (prev["rule_id"], prev["rule_version"]):
            reasons.append(
                f"rule {prev['rule_id']} v{prev['rule_version']} -> {change['rule_id']} v{change['rule_version']}"
            )
        if not reasons:
            gaps.append(
                f"quantity change {change['old_value']} -> {change['new_value']} (offer version "
                f"{now_ref.get('offer_version')}, transfer {change['transfer_id']}) is explained by no recorded "
                f"change of reservations, own stock, product, supplier offers or rule since the previous quantity "
                f"change ({since.isoformat() if since else '-'})"
            )
        history.append(
            {
                "change_id": change["change_id"],
                "recorded_at": change["recorded_at"],
                "transfer_id": change["transfer_id"],
                "old_value": change["old_value"],
                "new_value": change["new_value"],
                "offer_version": now_ref.get("offer_version"),
                "explained_by": reasons,
            }
        )
        prev = change
    return history


def _reservations(
    conn: psycopg.Connection,
    sku: str,
    basis: tuple[dict[str, Any] | None, Any, datetime],
    inputs: list[dict[str, Any]],
    gaps: list[str],
    ref: Any,
) -> dict[str, Any]:
    """The order lines whose held units the traced quantity subtracted (see :func:`trace_offer`)."""
    change, quantity, counted_at = basis
    known = [c for c in inputs if c["recorded_at"] <= counted_at]
    # The ERP row version the hub had read then: a line the ERP booked at or before it is in the ERP's
    # own figures (hub.erp_has_taken_over), so pricing no longer subtracted it.
    versions = [_timestamp((c["source_ref"] or {}).get("erp_updated_at")) for c in known if c["dataset"] == "stock"]
    erp_version = max((v for v in versions if v is not None), default=None)
    folded: dict[tuple[str, str, str], dict[str, Any]] = {}
    for c in known:
        if c["dataset"] != "order":
            continue
        entry = folded.setdefault(
            _line_key(c), {"state": None, "units": None, "import": None, "erp_state": None, "erp_transfer": None}
        )
        if c["field"] == "reservation":
            entry["state"], entry["units"] = _state_units(c["new_value"])
            if c["old_value"] is None:
                entry["import"] = c["transfer_id"]
        else:
            entry["erp_state"], entry["erp_transfer"] = c["new_value"], c["transfer_id"]
    lines: list[dict[str, Any]] = []
    for row in _rows(conn, _RESERVATIONS, {"sku": sku, "until": counted_at}):
        name = f"order {row['channel']}:{row['order_id']} line {row['line_id']}"
        found = folded.get((row["channel"], row["order_id"], row["line_id"]))
        if found is None or found["state"] is None:
            gaps.append(f"{name}: reserved at {row['reserved_at'].isoformat()} but no reservation row in audit.change")
            continue
        entry = found
        booked = row["erp_booked_at"]
        if entry["state"] != "held" or (booked is not None and erp_version is not None and erp_version >= booked):
            continue
        ref(entry["import"], f"{name}: reserved (order import)")
        if row["erp_transfer_id"] is not None:
            ref(row["erp_transfer_id"], f"{name}: ERP hand-off")
        lines.append(
            {
                "channel": row["channel"],
                "order_id": row["order_id"],
                "line_id": row["line_id"],
                "units": entry["units"],
                "state": entry["state"],
                "state_now": row["state"],
                "oversold": row["oversold"],
                "available_at_reservation": row["available_at_reservation"],
                "reserved_at": row["reserved_at"],
                "import_transfer_id": entry["import"],
                "order_status": row["order_status"],
                "marketplace_status": row["marketplace_status"],
                "erp_state_then": entry["erp_state"] or "pending",
                "erp_state": row["erp_state"],
                "erp_key": row["erp_key"],
                "erp_handed_at": row["erp_handed_at"],
                "erp_booked_at": booked,
                "erp_error": row["erp_error"],
                "erp_transfer_id": row["erp_transfer_id"],
            }
        )
    return {
        "quantity": quantity,
        "counted_at": counted_at,
        "quantity_change_id": change["change_id"] if change is not None else None,
        "erp_stock_version": erp_version,
        "units_held": sum(line["units"] or 0 for line in lines),
        "lines": lines,
    }


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
              "reservations": {                  # marketplace orders that lowered the quantity
                  "quantity", "counted_at",      # the traced quantity and when it was computed
                  "quantity_change_id", "erp_stock_version", "units_held",
                  "lines": [{"channel", "order_id", "line_id", "units", "state" (then: held),
                             "state_now", "oversold", "available_at_reservation", "reserved_at",
                             "import_transfer_id", "order_status", "marketplace_status",
                             "erp_state_then", "erp_state", "erp_key", "erp_handed_at",
                             "erp_booked_at", "erp_error", "erp_transfer_id"}],
                  "quantity_changes": [{"change_id", "recorded_at", "transfer_id", "old_value",
                                        "new_value", "offer_version", "explained_by": [str]}],
              },
              "transfers": [{"seq", "transfer_id", "run_id", "dag_id", "task_id", "try_number",
                             "map_index", "source", "target", "dataset", "status",
                             "payload_sha256", "rows_changed", "changes_count", "changes_sha256",
                             "started_at", "finished_at", "hash", "referenced_by": [str]}],
              "gaps": [str],                     # every link that could not be established
            }

        The reservations counted are those of order lines held at ``counted_at`` (folded from the
        ``audit.change`` rows of dataset ``order``) and not yet in the ERP's figures as the hub had read
        them then (booked at or before the newest ERP stock version recorded), which is what
        ``hub.reservation_outstanding`` subtracted. Every quantity change row must be explained by a
        recorded input change since the one before it (a reservation, own stock, the product, a
        supplier offer of the GTIN, the rule) or it is a gap; a channel setting changed in the
        configuration (buffers, ``max_listed``) leaves no row and shows as such a gap.
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
    supplier_changes: list[dict[str, Any]] = []
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

    # The order lines that held units when the traced quantity was computed, and why it changed.
    inputs = _rows(conn, _INPUT_CHANGES, params)
    quantity_changes = [c for c in channel_changes if c["field"] == "quantity"]
    basis = _quantity_basis(offer, published, quantity_changes, change_by_version, at)
    reservations = _reservations(conn, sku, basis, inputs, gaps, ref)
    reservations["quantity_changes"] = _explain_quantity_changes(
        quantity_changes, inputs, supplier_changes, basis[2], gaps
    )

    # Every transfer referenced, from the ledger.
    transfers = _rows(conn, _TRANSFERS, {"ids": sorted(refs)})
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
            "reservations": reservations,
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
    held = trace["reservations"]
    lines.append(
        f"  reservations counted at {held['counted_at']} for quantity {held['quantity']}: "
        f"{held['units_held']} unit(s) held by {len(held['lines'])} order line(s)"
    )
    for line in held["lines"]:
        lines.append(
            f"    {line['channel']} order {line['order_id']} line {line['line_id']}: {line['units']} unit(s) "
            f"{line['state']} (now {line['state_now']}, oversold {line['oversold']}) reserved {line['reserved_at']} "
            f"import {line['import_transfer_id']}; ERP {line['erp_state']} {line['erp_transfer_id'] or ''}".rstrip()
        )
    for change in held["quantity_changes"]:
        lines.append(
            f"    quantity {change['old_value']} -> {change['new_value']} at {change['recorded_at']}: "
            + ("; ".join(change["explained_by"]) or "UNEXPLAINED")
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
