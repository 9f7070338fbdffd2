"""Assets (datasets) the DAGs read and write, with URIs that are stable across environments.

The same Asset objects serve two purposes:

- **Scheduling**: DAGs are triggered by ``HUB_PRODUCT``, ``HUB_SUPPLIER_OFFER`` and ``HUB_CHANNEL_OFFER``.
  Airflow links producers and consumers by these objects (name + URI). Change a name and its URI
  together, never one alone: Airflow marks an Asset inactive while another active Asset in the metadata
  database has the same name or the same URI, and ``DAG.test()`` (the demo) never runs the scheduler's
  clean-up that would retire the old one. Names follow the OpenLineage dataset name
  (``commerce_hub.hub.product``).
- **Lineage**: every task declares ``inlets``/``outlets`` with these Assets and the OpenLineage provider
  turns them into OpenLineage datasets (see :mod:`commerce_sync.lineage`).

URI scheme choice (``apache-airflow-providers-openlineage`` 2.20.3): the provider converts an Asset with
``translate_airflow_asset`` (``airflow/providers/openlineage/utils/utils.py``), which looks up a converter
by URI scheme in the providers manager. Installed here are only ``postgres``/``postgresql``
(``airflow/providers/postgres/assets/postgres.py``: ``postgres://host:port/db/schema/table`` becomes
namespace ``postgres://host:port``, name ``db.schema.table``) and ``file``
(``airflow/providers/common/io/assets/file.py``: ``file://host/path`` becomes namespace ``file://host``,
name ``/path``). Any other scheme (the old ``hub://``, ``channel://``, and also ``https://``) is silently
dropped by the provider; :mod:`commerce_sync.lineage` adds the ``http(s)`` conversion the provider lacks.

Stable logical hosts: a URI must not depend on where the code runs (DAG parsing must not read
connections, and lineage from dev, CI and production must name the same dataset). So the authority of a
database or feed URI is the **Airflow connection id** that resolves to the real server in each
environment (``hub_db``, ``erp_db``, ``supplier_acme``), with the PostgreSQL default port, and the
database name is the production one (``commerce_hub``, ``commerce_erp``), even where tests use throwaway
databases. Files under ``COMMERCE_SYNC_DATA_DIR`` use the logical host ``commerce-sync-data``. Public
marketplace APIs use their real canonical endpoint (``https://api.allegro.pl/sale/offers``): the sandbox
simulator speaks that contract, so lineage names what production talks to.
"""

from __future__ import annotations

from airflow.sdk import Asset

HUB_HOST = "hub_db:5432"
HUB_DATABASE = "commerce_hub"
ERP_HOST = "erp_db:5432"
ERP_DATABASE = "commerce_erp"
DATA_HOST = "commerce-sync-data"
ALLEGRO_API = "https://api.allegro.pl"


def hub_table(table: str, schema: str = "hub") -> Asset:
    """The Asset of a hub table, named ``commerce_hub.<schema>.<table>``."""
    return Asset(name=f"{HUB_DATABASE}.{schema}.{table}", uri=f"postgres://{HUB_HOST}/{HUB_DATABASE}/{schema}/{table}")


# Hub tables.
HUB_PRODUCT = hub_table("product")
HUB_STOCK = hub_table("stock")
HUB_SUPPLIER_OFFER = hub_table("supplier_offer")
HUB_QUARANTINE = hub_table("quarantine")
HUB_CHANNEL_OFFER = hub_table("channel_offer")
HUB_OUTBOX = hub_table("outbox")
HUB_CHANNEL_LISTING = hub_table("channel_listing")
# Per hub SKU the chosen supplier offer and the dropship stock (written by the supplier merge, read by pricing).
HUB_SKU_SUPPLY = hub_table("sku_supply")
HUB_EXCHANGE_RATE = hub_table("exchange_rate")
HUB_SUPPLIER_PRICE_CHANGE = hub_table("supplier_price_change")

# Sources. The ERP table mirrors the query in include/config/erp.yaml (``FROM erp.products``). Supplier
# feeds are per supplier and the supplier list is configuration, unknown at parse time: their Assets are
# built at run time by :func:`supplier_feed` and reported with ``commerce_sync.lineage.report_input``.
ERP_PRODUCTS = Asset(name=f"{ERP_DATABASE}.erp.products", uri=f"postgres://{ERP_HOST}/{ERP_DATABASE}/erp/products")

# Channels: each registered kind names the asset its channels write (commerce_sync.registry).
ALLEGRO_OFFERS = Asset(name="allegro.sale.offers", uri=f"{ALLEGRO_API}/sale/offers")
EBAY_OFFERS = Asset(name="ebay.sell.inventory.offer", uri="https://api.ebay.com/sell/inventory/v1/offer")
AMAZON_LISTINGS = Asset(
    name="amazon.listings.items", uri="https://sellingpartnerapi-eu.amazon.com/listings/2021-08-01/items"
)
HUB_CHANNEL_RECONCILIATION = hub_table("channel_reconciliation")
HUB_SALES_ORDER = hub_table("sales_order")
# A channel's webhook delivery accepted by the project's endpoint (e.g. WooCommerce's): the endpoint records
# an event on this asset, and the order import runs on it as well as on its cron (a doorbell; the import's
# cursor stays the truth). The event's extra names the channel, topic and delivery.
HUB_WEBHOOK_DELIVERY = hub_table("webhook_delivery")
HUB_STOCK_RESERVATION = hub_table("stock_reservation")
ERP_ORDERS = Asset(name=f"{ERP_DATABASE}.erp.orders", uri=f"postgres://{ERP_HOST}/{ERP_DATABASE}/erp/orders")


def feed_file(channel_id: str, path: str) -> Asset:
    """The Asset of one feed channel's published file (``feed.<channel id>``).

    Args:
        channel_id: the feed channel's id in channels.yaml.
        path: the channel's ``feed.path``; a relative path lives under the data directory (logical host
            ``commerce-sync-data``), an absolute one on the worker's file system.
    """
    if path.startswith("/"):
        return Asset(name=f"feed.{channel_id}", uri=f"file://{path}")
    return Asset(name=f"feed.{channel_id}", uri=f"file://{DATA_HOST}/{path}")


def supplier_feed(supplier_id: str, transport_type: str, location: str, conn_id: str | None = None) -> Asset:
    """The Asset of one supplier's feed, stable across environments.

    Args:
        supplier_id: The supplier's id from suppliers.yaml (the Asset is named ``supplier.<id>.feed``).
        transport_type: ``"http"``, ``"sftp"`` or ``"file"``.
        location: The transport's path: the URL path for HTTP, the remote path for SFTP, the file path for
            file transports.
        conn_id: The Airflow connection holding the base URL or SFTP host; it is the logical host.
    """
    if transport_type in ("http", "sftp"):
        if not conn_id:
            raise ValueError(f"supplier {supplier_id!r}: an {transport_type} feed needs a connection id")
        scheme = "https" if transport_type == "http" else "sftp"
        uri = f"{scheme}://{conn_id}/{location.lstrip('/')}"
    else:
        uri = f"file://{DATA_HOST}/{location.lstrip('/')}"
    return Asset(name=f"supplier.{supplier_id}.feed", uri=uri)
