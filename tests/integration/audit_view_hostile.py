"""Hostile free text for the auditor's view: every text the view shows, carrying XSS payloads.

Used by the XSS test (``test_audit_view_xss.py``) and the browser test, each with its own
payloads. :func:`fill_hostile` writes one ledger transfer from a hostile supplier with quarantined
rows, a hostile product with its channel offer, a failed outbox row, a supplier offer, a
marketplace order holding the product (oversold, refused by the ERP) and change rows, so the
transfers list, the transfer page, the orders list and the SKU trace all show hostile text.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from commerce_sync.audit import changes, ledger

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
PAYLOADS = (SCRIPT, IMG)
GTIN = "05900000000017"


@dataclass(frozen=True)
class Hostile:
    """What :func:`fill_hostile` wrote; every text field ends with all the payloads."""

    payloads: tuple[str, ...]
    transfer_id: uuid.UUID
    supplier: str  # a supplier name: the transfer's source is "supplier:<name>"
    dag_id: str
    task_id: str
    dataset: str
    message: str  # the transfer's message (a channel's error text)
    detail_key: str
    detail_value: str
    validation_note: str
    data_docs: str  # the Data Docs path in the details (holds "/": a nested path)
    sku: str  # the product's SKU, the quarantined rows' record key
    product_name: str
    reason: str  # a quarantine reason
    expectation: str
    observed_value: str
    outbox_error: str  # a channel's error message on an outbox row
    rule_id: str
    change_value: str  # an audit.change row's new value
    order_id: str  # a marketplace order on allegro (one line of the hostile SKU, held and oversold)
    line_id: str
    marketplace_status: str
    erp_error: str  # why the ERP refused the order

    @property
    def source(self) -> str:
        return f"supplier:{self.supplier}"

    @property
    def list_texts(self) -> tuple[str, ...]:
        """Texts the transfers list shows (its columns and filter drop-downs)."""
        return (self.source, self.dag_id, self.task_id, self.dataset)

    @property
    def transfer_texts(self) -> tuple[str, ...]:
        """Texts the transfer's page shows (ledger row, details, validation, quarantine)."""
        return (
            *self.list_texts,
            self.message,
            self.detail_key,
            self.detail_value,
            self.validation_note,
            self.sku,
            self.reason,
            self.expectation,
            self.observed_value,
        )

    @property
    def trace_texts(self) -> tuple[str, ...]:
        """Texts the SKU trace on ``allegro`` shows (offer, outbox, product, suppliers, changes)."""
        return (
            self.sku,
            self.product_name,
            self.supplier,
            self.outbox_error,
            self.rule_id,
            self.change_value,
            self.order_id,
            self.line_id,
        )

    @property
    def order_texts(self) -> tuple[str, ...]:
        """Texts the orders list on ``allegro`` shows."""
        return (self.order_id, self.line_id, self.sku, self.marketplace_status, self.erp_error)


def fill_hostile(dsn: str, payloads: Sequence[str] = PAYLOADS) -> Hostile:
    """Write hostile rows into the hub at ``dsn`` (one transfer, its quarantine, a traced offer)."""
    tail = "".join(payloads)

    def text(label: str) -> str:
        return f"{label} {tail}"

    hostile = Hostile(
        payloads=tuple(payloads),
        transfer_id=uuid.uuid4(),
        supplier=text("acme"),
        dag_id=text("dag"),
        task_id=text("task"),
        dataset=text("dataset"),
        message=text("HTTPError: 400 from the channel:"),
        detail_key=text("key"),
        detail_value=text("detail"),
        validation_note=text("note"),
        data_docs=text("docs") + "/index.html",
        sku=text("SKU"),
        product_name=text("Kettle"),
        reason=text("reason"),
        expectation=text("expect"),
        observed_value=text("observed"),
        outbox_error=text("channel refused:"),
        rule_id=text("rule"),
        change_value=text("new name"),
        order_id=text("order"),
        line_id=text("line"),
        marketplace_status=text("READY"),
        erp_error=text("ERP refused order:"),
    )
    with psycopg.connect(dsn) as conn:
        transfer = ledger.Transfer(
            source=hostile.source,
            target="hub",
            dataset=hostile.dataset,
            run=ledger.RunContext(run_id=text("run"), dag_id=hostile.dag_id, task_id=hostile.task_id),
            transfer_id=hostile.transfer_id,
            rows_read=3,
            rows_written=1,
            rows_rejected=2,
            message=hostile.message,
            details={
                hostile.detail_key: hostile.detail_value,
                "list": [{hostile.detail_key: hostile.detail_value}],
                "validation": {"suite": "supplier_offer", "note": hostile.validation_note},
                "breakers": {"tripped": [hostile.detail_value]},
                "data_docs": hostile.data_docs,
            },
        )
        # Change rows belong to their transfer's own transaction, before its ledger row (the database
        # refuses them afterwards), and the ledger row carries their count and digest.
        conn.execute(
            """INSERT INTO audit.change (transfer_id, dataset, sku, field, old_value, new_value)
               VALUES (%s, 'product', %s, 'name', 'Kettle', %s)""",
            (hostile.transfer_id, hostile.sku, hostile.change_value),
        )
        conn.execute(
            """INSERT INTO audit.change (transfer_id, dataset, sku, channel, field, old_value, new_value, source_ref)
               VALUES (%s, 'order', %s, 'allegro', 'reservation', NULL, 'held 1', %s)""",
            (hostile.transfer_id, hostile.sku, Jsonb({"order_id": hostile.order_id, "line_id": hostile.line_id})),
        )
        changes.summarise(conn, transfer)
        ledger.append(conn, transfer, "failed")
        for record_no in (1, 2):
            conn.execute(
                """INSERT INTO hub.quarantine (dataset, source, transfer_id, record_key, record_no, source_line,
                                               expectation, column_name, observed_value, reason, raw)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    hostile.dataset,
                    hostile.source,
                    hostile.transfer_id,
                    hostile.sku,
                    record_no,
                    record_no + 1,
                    hostile.expectation,
                    text("column"),
                    hostile.observed_value,
                    hostile.reason,
                    Jsonb({"sku": hostile.sku, "name": hostile.product_name}),
                ),
            )
        conn.execute(
            """INSERT INTO hub.product (sku, gtin, name, purchase_price, currency, vat_rate, row_hash, transfer_id)
               VALUES (%s, %s, %s, 50, 'PLN', 0.23, 'h-hostile', %s)""",
            (hostile.sku, GTIN, hostile.product_name, hostile.transfer_id),
        )
        conn.execute(
            """INSERT INTO hub.channel_offer (channel, sku, price, currency, quantity, availability, cost,
                                              floor_price, floor_applied, rule_id, rule_version, row_hash,
                                              transfer_id)
               VALUES ('allegro', %s, 79.99, 'PLN', 5, 'in_stock', 50, 60, false, %s, '1', 'h-hostile', %s)""",
            (hostile.sku, hostile.rule_id, hostile.transfer_id),
        )
        conn.execute(
            """INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, status,
                                       attempts, error, created_transfer_id)
               VALUES ('allegro', %s, 'price', %s, 1, %s, 'failed', 1, %s, %s)""",
            (hostile.sku, Jsonb({"price": "79.99"}), uuid.uuid4().hex, hostile.outbox_error, hostile.transfer_id),
        )
        conn.execute(
            """INSERT INTO hub.sales_order (channel, order_id, status, marketplace_status, transfer_id, erp_error)
               VALUES ('allegro', %s, 'ready', %s, %s, %s)""",
            (hostile.order_id, hostile.marketplace_status, hostile.transfer_id, hostile.erp_error),
        )
        conn.execute(
            """INSERT INTO hub.order_line (channel, order_id, line_id, sku, quantity) VALUES ('allegro', %s, %s, %s, 1)""",
            (hostile.order_id, hostile.line_id, hostile.sku),
        )
        conn.execute(
            """INSERT INTO hub.stock_reservation (channel, order_id, line_id, sku, quantity, state, oversold,
                                                  available_at_reservation, transfer_id)
               VALUES ('allegro', %s, %s, %s, 1, 'held', 1, 0, %s)""",
            (hostile.order_id, hostile.line_id, hostile.sku, hostile.transfer_id),
        )
        conn.execute(
            """INSERT INTO hub.supplier_offer (supplier, supplier_sku, gtin, name, purchase_price, currency,
                                               quantity, row_hash, transfer_id)
               VALUES (%s, %s, %s, %s, 40, 'PLN', 7, 'h-hostile', %s)""",
            (hostile.supplier, hostile.sku, GTIN, hostile.product_name, hostile.transfer_id),
        )
    return hostile
