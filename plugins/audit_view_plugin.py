"""Airflow plugin: the auditor's view of the transfer ledger, inside the Airflow UI.

Mounts the FastAPI app from :mod:`commerce_sync.audit.view` on the api-server under ``/audit``
and adds *Browse > Audit ledger* to the UI's navigation (shown in an iframe at ``/plugin/audit``).
The app renders the package's Jinja2 templates (``commerce_sync/audit/templates``) and serves its
style sheet (``commerce_sync/audit/static``) at ``/audit/static/``; both ship as package data.
Every page of the app requires an authenticated Airflow user (see the module docstring there).
Changing this file needs an api-server restart.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from commerce_sync.audit.view import VIEW_NAME, LazyASGIApp, create_app

URL_PREFIX = "/audit"


class AuditViewPlugin(AirflowPlugin):
    """Registers the audit ledger app and its navigation entry."""

    name = "commerce_sync_audit_view"
    # Built on the first request: task processes load plugins too and must not pay for the app.
    fastapi_apps = [{"app": LazyASGIApp(create_app), "url_prefix": URL_PREFIX, "name": VIEW_NAME}]
    external_views = [
        {
            "name": VIEW_NAME,
            # Relative: the UI resolves it against its <base href> ([api] base_url), so the iframe
            # still finds the app when Airflow is served under a path prefix.
            "href": f"{URL_PREFIX.lstrip('/')}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "audit",
        }
    ]
