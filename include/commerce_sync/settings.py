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


DEFAULT_FILE_MODE = 0o644


def published_file_mode() -> int:
    """Permission bits of the files we publish (feeds, reports): ``COMMERCE_SYNC_FILE_MODE`` (octal) or 0644.

    The files are written under a private temporary name (``mkstemp`` gives 0600) and renamed; without
    this a web server running as another user could not serve them.
    """
    raw = os.environ.get("COMMERCE_SYNC_FILE_MODE")
    if not raw:
        return DEFAULT_FILE_MODE
    try:
        mode = int(raw, 8)
    except ValueError:
        raise ValueError(f"COMMERCE_SYNC_FILE_MODE={raw!r} is not an octal file mode such as 0644") from None
    if not 0 <= mode <= 0o777:
        raise ValueError(f"COMMERCE_SYNC_FILE_MODE={raw!r} is not a file mode between 0000 and 0777")
    return mode


DEFAULT_FAST_PATH_MAX_SKUS = 1000


def fast_path_max_skus() -> int:
    """The largest change (in SKUs) that takes the fast path: ``COMMERCE_SYNC_FAST_PATH_MAX_SKUS`` or 1000.

    A change of at most this many SKUs skips whole-catalog work between the source and the
    marketplaces (the hub catalog suite, Data Docs of a clean ERP batch, a supply merge nothing
    asked for); larger changes and the scheduled runs do it all. 0 turns the fast path off.
    """
    raw = os.environ.get("COMMERCE_SYNC_FAST_PATH_MAX_SKUS")
    if not raw:
        return DEFAULT_FAST_PATH_MAX_SKUS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"COMMERCE_SYNC_FAST_PATH_MAX_SKUS={raw!r} is not a whole number of SKUs") from None
    if value < 0:
        raise ValueError(f"COMMERCE_SYNC_FAST_PATH_MAX_SKUS={raw!r} must not be negative")
    return value
