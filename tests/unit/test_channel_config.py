"""Channel configuration: kinds, credentials reference, accepted currencies, reconcile policy, feed target."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from commerce_sync.config import FEED_KINDS, MARKETPLACE_KINDS, Channel, GoogleFeedSettings

FEED = GoogleFeedSettings(path="feeds/x.xml", title="t", shop_url="https://shop.example.com")


@pytest.mark.parametrize("kind", sorted(MARKETPLACE_KINDS))
def test_marketplace_needs_a_connection(kind: str) -> None:
    with pytest.raises(ValidationError, match=f"an {kind} channel needs conn_id"):
        Channel(id="c1", kind=kind, pricing_rule="r")
    assert Channel(id="c1", kind=kind, pricing_rule="r", conn_id="x").reconcile == "hub_wins"


@pytest.mark.parametrize("kind", sorted(FEED_KINDS))
def test_feed_needs_feed_settings(kind: str) -> None:
    with pytest.raises(ValidationError, match=f"a {kind} channel needs a 'feed' section"):
        Channel(id="c1", kind=kind, pricing_rule="r")
    assert Channel(id="c1", kind=kind, pricing_rule="r", feed=FEED).feed == FEED


def test_currencies_default_to_the_channel_currency() -> None:
    plain = Channel(id="c1", kind="ebay", pricing_rule="r", conn_id="x", currency="EUR")
    assert plain.currencies == frozenset({"EUR"})
    wide = Channel(id="c1", kind="ebay", pricing_rule="r", conn_id="x", accepted_currencies=["EUR", "PLN"])
    assert wide.currencies == frozenset({"EUR", "PLN"})
    with pytest.raises(ValidationError, match="reconcile"):
        Channel(id="c1", kind="ebay", pricing_rule="r", conn_id="x", reconcile="ask_bob")


def test_feed_target_must_be_a_url() -> None:
    with pytest.raises(ValidationError, match="target"):
        GoogleFeedSettings(path="x.xml", title="t", shop_url="https://s", target="/srv/feeds/x.xml")
    assert GoogleFeedSettings(path="x.xml", title="t", shop_url="https://s", target="s3://bucket/x.xml").target
