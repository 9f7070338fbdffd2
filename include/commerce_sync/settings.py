"""Process-level settings read from the environment (never secrets: those come from Connections)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HUB_URL = "postgresql://postgres@127.0.0.1:5432/commerce_hub"

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOT = Path(__file__).resolve().parent


def hub_database_url() -> str:
    """URL of the hub database: ``HUB_DATABASE_URL`` or the local default."""
    return os.environ.get("HUB_DATABASE_URL") or DEFAULT_HUB_URL


def config_dir() -> Path:
    """Directory holding suppliers.yaml, channels.yaml and pricing.yaml."""
    return Path(os.environ.get("COMMERCE_SYNC_CONFIG_DIR") or REPO_ROOT / "include" / "config")


def data_dir() -> Path:
    """Writable directory for feeds, downloads and sandbox state (``COMMERCE_SYNC_DATA_DIR``)."""
    return Path(os.environ.get("COMMERCE_SYNC_DATA_DIR") or REPO_ROOT / ".data")
