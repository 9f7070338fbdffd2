"""How each marketplace's order statuses and lines map onto the hub's orders (pure functions)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from commerce_sync.channels.allegro import checkout_form_order
from commerce_sync.channels.amazon import amazon_order
from commerce_sync.channels.ebay import ebay_order
from commerce_sync.channels.order_reading import MalformedOrder, decode_cursor, encode_cursor
from commerce_sync.errors import DataError


def _form(status: str, quantity: Any = 2, **changes: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "id": "29f5b2b0-0c1f-11ef-9d5b-0242ac120002",
        "status": status,
        "revision": "a1b2c3d4",
        "updatedAt": "2026-12-05T10:00:00.123Z",
        "fulfillment": {"status": "NEW"},
        "lineItems": [
            {
                "id": "line-1",
                "offer": {"id": "17000000003", "name": "x", "external": {"id": "SKU-000003"}},
                "quantity": quantity,
                "price": {"amount": "19.99", "currency": "PLN"},
                "boughtAt": "2026-12-05T09:59:00.000Z",
            }
        ],
    }
    form.update(changes)
    return form


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("BOUGHT", "unpaid"),
        ("FILLED_IN", "unpaid"),
        ("READY_FOR_PROCESSING", "ready"),
        ("CANCELLED", "cancelled"),
    ],
)
def test_allegro_checkout_form_statuses(status: str, expected: str) -> None:
    order = checkout_form_order("f", _form(status))
    assert order.status == expected
    assert order.marketplace_status == f"{status}/NEW"
    line = order.lines[0]
    assert (line.sku, line.offer_id, line.quantity, line.unit_price, line.currency) == (
        "SKU-000003",
        "17000000003",
        2,
        Decimal("19.99"),
        "PLN",
    )
    assert order.revision == "a1b2c3d4"
    assert order.created_at is not None and order.updated_at is not None


def _ebay(payment: str, cancel: str = "NONE_REQUESTED", quantity: Any = 3) -> dict[str, Any]:
    return {
        "orderId": "12-34567-89012",
        "creationDate": "2026-12-05T09:00:00.000Z",
        "lastModifiedDate": "2026-12-05T09:30:00.000Z",
        "orderPaymentStatus": payment,
        "orderFulfillmentStatus": "NOT_STARTED",
        "cancelStatus": {"cancelState": cancel, "cancelRequests": []},
        "lineItems": [
            {
                "lineItemId": "100",
                "legacyItemId": "5000000003",
                "sku": "SKU-000003",
                "quantity": quantity,
                "lineItemCost": {"value": "30.00", "currency": "PLN"},
            }
        ],
    }


@pytest.mark.parametrize(
    ("payment", "cancel", "expected"),
    [
        ("PENDING", "NONE_REQUESTED", "unpaid"),
        ("FAILED", "NONE_REQUESTED", "unpaid"),
        ("PAID", "NONE_REQUESTED", "ready"),
        ("PAID", "IN_PROGRESS", "ready"),  # a cancel request is not a cancellation yet
        ("PARTIALLY_REFUNDED", "NONE_REQUESTED", "ready"),
        ("FULLY_REFUNDED", "CANCELED", "cancelled"),
        ("PENDING", "CANCELED", "cancelled"),
    ],
)
def test_ebay_statuses(payment: str, cancel: str, expected: str) -> None:
    order = ebay_order(_ebay(payment, cancel))
    assert order.status == expected
    assert order.lines[0].unit_price == Decimal("10.00"), "lineItemCost is the line's total"
    assert order.revision == "2026-12-05T09:30:00.000Z"


def _amazon(status: str | None, quantity: Any = 1) -> dict[str, Any]:
    order: dict[str, Any] = {
        "orderId": "171-1234567-1234567",
        "createdTime": "2026-12-05T09:00:00Z",
        "lastUpdatedTime": "2026-12-05T09:10:00Z",
        "salesChannel": {"channelName": "AMAZON"},
        "orderItems": [
            {
                "orderItemId": "68828574383266",
                "quantityOrdered": quantity,
                "product": {
                    "asin": "B0ABCDEF12",
                    "sellerSku": "SKU-000003",
                    "price": {"unitPrice": {"amount": "12.50", "currencyCode": "PLN"}},
                },
            }
        ],
    }
    if status is not None:
        order["fulfillment"] = {"fulfillmentStatus": status}
    return order


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("PENDING_AVAILABILITY", "unpaid"),
        ("PENDING", "unpaid"),
        ("UNSHIPPED", "ready"),
        ("PARTIALLY_SHIPPED", "ready"),
        ("SHIPPED", "ready"),
        ("CANCELLED", "cancelled"),
        ("UNFULFILLABLE", "cancelled"),
    ],
)
def test_amazon_statuses(status: str, expected: str) -> None:
    order = amazon_order(_amazon(status))
    assert order.status == expected
    assert (order.lines[0].sku, order.lines[0].offer_id, order.lines[0].unit_price) == (
        "SKU-000003",
        "B0ABCDEF12",
        Decimal("12.50"),
    )


def test_amazon_cancelled_items_without_units_are_left_out() -> None:
    assert amazon_order(_amazon("CANCELLED", quantity=0)).lines == ()


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: checkout_form_order("f", _form("READY_FOR_PROCESSING", quantity=-1)), "quantity -1 is not positive"),
        (lambda: checkout_form_order("f", _form("READY_FOR_PROCESSING", quantity="2")), "is not an integer"),
        (lambda: checkout_form_order("f", _form("PAID")), "status 'PAID' is not one of"),
        (lambda: checkout_form_order("f", _form("BOUGHT", lineItems=[])), "no line items"),
        (lambda: ebay_order(_ebay("PAID", quantity=0)), "quantity 0 is not positive"),
        (lambda: ebay_order({**_ebay("PAID"), "orderId": None}), "has no orderId"),
        (lambda: ebay_order(_ebay("AWAITING")), "orderPaymentStatus 'AWAITING'"),
        (lambda: amazon_order(_amazon(None)), "fulfillment status None"),
        (lambda: amazon_order(_amazon("SHIPPED", quantity=-3)), "quantity -3 is not positive"),
    ],
)
def test_malformed_orders_name_the_order_and_the_rule(build: Any, reason: str) -> None:
    with pytest.raises(MalformedOrder, match=reason) as raised:
        build()
    assert raised.value.order_id


def test_cursors_round_trip_and_a_foreign_one_is_refused() -> None:
    state = {"from": "2026-12-05T09:30:00.000Z", "offset": 200}
    assert decode_cursor("eBay", encode_cursor(state)) == state
    assert decode_cursor("eBay", None) is None
    with pytest.raises(DataError, match="eBay: the stored order cursor"):
        decode_cursor("eBay", "12345-not-json")
