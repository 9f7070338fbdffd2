"""Prepare the sandbox for a run: load the sandbox ERP database and write the supplier feeds."""

from __future__ import annotations

import os
from pathlib import Path

from commerce_sync.db import redact, with_database
from commerce_sync.settings import data_dir, hub_database_url
from commerce_sync_sandbox.erp import load_erp
from commerce_sync_sandbox.feeds import write_feeds


def erp_database_url() -> str:
    """The sandbox ERP database: ``ERP_DATABASE_URL`` or ``commerce_erp`` beside the hub."""
    return os.environ.get("ERP_DATABASE_URL") or with_database(hub_database_url(), "commerce_erp")


def sandbox_dir() -> Path:
    """Where the sandbox keeps its feeds and simulator state: ``<data dir>/sandbox``."""
    return data_dir() / "sandbox"


def prepare_sandbox(erp_url: str, directory: Path) -> str:
    """Load (or top up) the sandbox ERP at ``erp_url`` and write the feeds under ``directory/feeds``.

    Returns:
        One line saying what was prepared, without credentials.
    """
    rows = load_erp(erp_url)
    feeds = write_feeds(directory / "feeds")
    return f"sandbox ERP {redact(erp_url)}: {rows} products; feeds: {', '.join(map(str, feeds.values()))}"
