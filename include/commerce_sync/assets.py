"""Assets (datasets) the DAGs produce and consume; stable URIs so lineage and scheduling agree."""

from __future__ import annotations

from airflow.sdk import Asset

HUB_PRODUCT = Asset(name="hub.product", uri="hub://commerce_sync/hub/product")
HUB_SUPPLIER_OFFER = Asset(name="hub.supplier_offer", uri="hub://commerce_sync/hub/supplier_offer")
HUB_CHANNEL_OFFER = Asset(name="hub.channel_offer", uri="hub://commerce_sync/hub/channel_offer")
HUB_OUTBOX_ALLEGRO = Asset(name="channel.allegro", uri="channel://allegro/offers")
FEED_GOOGLE = Asset(name="channel.google_merchant_feed", uri="file://commerce_sync/feeds/google_merchant")
