"""Channel configuration: kinds, credentials reference, accepted currencies, reconcile policy, feed target."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from commerce_sync import registry
from commerce_sync.config import Channel, FeedSettings

FEED = FeedSettings(path="feeds/x.xml", title="t", shop_url="https://shop.example.com")


@pytest.mark.parametrize("kind", [spec.name for spec in registry.kinds("marketplace")])
def test_marketplace_needs_a_connection(kind: str) -> None:
    with pytest.raises(ValidationError, match=f"an {kind} channel needs conn_id"):
        Channel(id="c1", kind=kind, pricing_rule="r")
    assert Channel(id="c1", kind=kind, pricing_rule="r", conn_id="x").reconcile == "hub_wins"


@pytest.mark.parametrize("kind", [spec.name for spec in registry.kinds("feed")])
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
        FeedSettings(path="x.xml", title="t", shop_url="https://s", target="/srv/feeds/x.xml")
    assert FeedSettings(path="x.xml", title="t", shop_url="https://s", target="s3://bucket/x.xml").target


def test_kinds_come_from_the_registry() -> None:
    # At least the built-in kinds (a new kind's module adds itself without editing this test).
    assert {spec.name for spec in registry.kinds("marketplace")} >= {"allegro", "ebay", "amazon"}
    assert {spec.name for spec in registry.kinds("feed")} >= {"google_merchant_feed", "meta_catalog_feed", "ceneo_feed"}
    with pytest.raises(ValidationError, match=r"unknown channel kind 'shopfront' \(registered: allegro, amazon"):
        Channel(id="c1", kind="shopfront", pricing_rule="r", conn_id="x")
    with pytest.raises(ValidationError, match="is not a feed: remove its 'feed' section"):
        Channel(id="c1", kind="ebay", pricing_rule="r", conn_id="x", feed=FEED)
    with pytest.raises(ValidationError, match="kind ebay takes no settings"):
        Channel(id="c1", kind="ebay", pricing_rule="r", conn_id="x", settings={"speed": "fast"})


def test_a_kind_registered_from_outside_validates_its_settings() -> None:
    from pydantic import BaseModel, ConfigDict

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        region: str

    spec = registry.ChannelKind(
        name="test_outside_feed",
        family="feed",
        title="Outside",
        capabilities=frozenset({"publish"}),
        asset=registry.fixed_asset("HUB_OUTBOX"),
        settings=Options,
    )
    registry.register(spec)
    try:
        assert Channel(id="c1", kind="test_outside_feed", pricing_rule="r", feed=FEED, settings={"region": "eu"})
        with pytest.raises(ValidationError, match="region"):
            Channel(id="c1", kind="test_outside_feed", pricing_rule="r", feed=FEED, settings={})
        with pytest.raises(ValueError, match="already registered"):
            registry.register(dataclasses.replace(spec, title="Other"))
    finally:
        registry.unregister("test_outside_feed")
    with pytest.raises(ValueError, match="outbox_fields must hold both or neither"):
        registry.ChannelKind(
            name="half",
            family="feed",
            title="Half",
            capabilities=frozenset({"publish"}),
            asset=registry.fixed_asset("HUB_OUTBOX"),
            outbox_fields=("quantity",),
        )


def test_built_in_kinds_come_from_every_module_of_the_channels_package() -> None:
    """No list of built-in modules to keep: every module of commerce_sync.channels is imported, and those
    that register a kind are the built-in kinds."""
    modules = registry.builtin_modules()
    assert {f"commerce_sync.channels.{name}" for name in ("allegro", "ebay", "amazon", "feeds")} <= set(modules)
    assert "commerce_sync.channels.marketplace" in modules  # imported too; it registers nothing
    names = {spec.name for spec in registry.kinds()}
    assert {"allegro", "ebay", "amazon", "google_merchant_feed", "meta_catalog_feed", "ceneo_feed"} <= names


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (("price", "quantity", "content"), None),
        (("content",), None),
        ((), None),
        (("price", "content"), "must hold both or neither"),
        (("price", "quantity", "colour"), r"unknown outbox_fields \['colour'\]"),
    ],
)
def test_a_kind_declares_the_outbox_fields_it_publishes(fields: tuple[str, ...], problem: str | None) -> None:
    def make() -> registry.ChannelKind:
        return registry.ChannelKind(
            name="fields_test",
            family="feed",
            title="Fields",
            capabilities=frozenset({"publish"}),
            asset=registry.fixed_asset("HUB_OUTBOX"),
            outbox_fields=fields,
        )

    if problem is None:
        spec = make()
        assert spec.queues("content") == ("content" in fields)
        assert spec.uses_outbox == bool(fields)
    else:
        with pytest.raises(ValueError, match=problem):
            make()


def test_open_hands_the_channel_to_the_adapter_and_may_let_it_create_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kind's adapter gets its channel's settings (configure), e.g. whether it may create missing offers."""
    from commerce_sync.channels.marketplace import Marketplace
    from commerce_sync.transport.http import HttpClient

    class Creating(Marketplace):
        kind = "creating_test"
        title = "Creating"
        max_items_per_request = 10

        def configure(self, channel: Channel) -> None:
            self.creates_offers = bool(channel.settings.get("create"))

        build = send = collect = read_offers = None  # type: ignore[assignment]

    Creating.__abstractmethods__ = frozenset()
    monkeypatch.setenv("AIRFLOW_CONN_CREATING_TEST", '{"conn_type": "http", "host": "http://127.0.0.1:9"}')
    spec = registry.ChannelKind(
        name="creating_test",
        family="marketplace",
        title="Creating",
        capabilities=frozenset({"publish"}),
        outbox_fields=("price", "quantity"),
        marketplace=lambda info: Creating(HttpClient(info.base_url())),
        asset=registry.fixed_asset("HUB_OUTBOX"),
    )
    registry.register(spec)
    try:
        for create in (True, False):
            channel = Channel(id="cc", kind="creating_test", conn_id="creating_test", pricing_rule="r")
            channel = channel.model_copy(update={"settings": {"create": create}})
            with spec.open(channel) as market:
                assert market.creates_offers is create
    finally:
        registry.unregister("creating_test")
