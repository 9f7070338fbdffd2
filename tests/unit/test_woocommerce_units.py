"""Pure parts of the WooCommerce kind: the webhook signature and the settings model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from commerce_sync.channels.woocommerce import STATUS_MAP, WooCommerceSettings, verify_webhook, webhook_signature

BODY = b'{"id":1}'
# openssl: printf '{"id":1}' | openssl dgst -sha256 -hmac 'wh-secret' -binary | base64
SIGNED = "OmlQ/6nlh6ExtLBbAzHYDQ8N/f2/RpURS30WCKm8wJQ="


def test_signature_is_wc_base64_hmac_sha256_of_the_raw_body() -> None:
    assert webhook_signature("wh-secret", BODY) == SIGNED
    assert verify_webhook("wh-secret", BODY, SIGNED)


@pytest.mark.parametrize(
    ("secret", "body", "signature"),
    [
        ("other", BODY, SIGNED),
        ("wh-secret", BODY + b" ", SIGNED),
        ("wh-secret", BODY, None),
        ("wh-secret", BODY, ""),
        ("", BODY, webhook_signature("", BODY)),
    ],
    ids=["wrong-secret", "changed-body", "missing", "empty", "no-secret-configured"],
)
def test_anything_else_is_refused(secret: str, body: bytes, signature: str | None) -> None:
    assert not verify_webhook(secret, body, signature)


def test_every_core_order_status_is_mapped_explicitly() -> None:
    assert STATUS_MAP == {
        "pending": "unpaid",
        "on-hold": "unpaid",
        "processing": "ready",
        "completed": "ready",
        "cancelled": "cancelled",
        "refunded": "cancelled",
        "failed": "cancelled",
    }


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"image_url": "https://shop.example.com/images/main.jpg"}, "image_url"),
        ({"hold_minutes": -1}, "hold_minutes"),
        ({"order_statuses": {"shipped": "sent"}}, "order_statuses"),
        ({"create_missng": True}, "create_missng"),
    ],
)
def test_settings_refuse_what_cannot_work(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        WooCommerceSettings.model_validate(settings)
