"""Airflow plugin: the WooCommerce webhook endpoint, served by the api-server.

Mounts :func:`commerce_sync.channels.woocommerce.webhook_app` under ``/woocommerce``: a shop's webhooks
(``order.created``, ``order.updated``) are delivered to ``<airflow base URL>/woocommerce/<channel id>``.
The endpoint does not use Airflow's login: every delivery must carry WooCommerce's signature made with
the channel's webhook secret (connection ``settings.webhook_conn_id``), and a verified delivery only
rings the channel's order import (an asset event); the polled order cursor stays the truth. Changing
this file needs an api-server restart.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from commerce_sync.airflow_glue import hub_dsn
from commerce_sync.audit.view import LazyASGIApp
from commerce_sync.channels.woocommerce import webhook_app

URL_PREFIX = "/woocommerce"


class WooCommerceWebhookPlugin(AirflowPlugin):
    """Registers the webhook app (built on its first request, so importing the plugin stays cheap)."""

    name = "commerce_sync_woocommerce_webhook"
    fastapi_apps = [
        {"app": LazyASGIApp(lambda: webhook_app(hub_dsn)), "url_prefix": URL_PREFIX, "name": "WooCommerce webhooks"}
    ]
