"""Staging names for replace-by-rename uploads (feed targets over SFTP or ``ObjectStoragePath``).

Every upload writes to a staging name of its own beside the target (``.<name>.<32 hex>.tmp``, so two
runs never share one) and renames it over the target only when complete. A staging file left by an
upload whose connection was lost is recognised by :func:`is_staging_of` and removed by a later upload
once it is older than :data:`STALE_STAGING_SECONDS` (an upload in progress keeps its mtime fresh).
"""

from __future__ import annotations

import re
import uuid

STALE_STAGING_SECONDS = 3600


def staging_name(name: str) -> str:
    """A staging file name for ``name`` that no other upload uses."""
    return f".{name}.{uuid.uuid4().hex}.tmp"


def is_staging_of(candidate: str, name: str) -> bool:
    """Whether ``candidate`` is a staging file name made by :func:`staging_name` for ``name``."""
    return re.fullmatch(rf"\.{re.escape(name)}\.[0-9a-f]{{32}}\.tmp", candidate) is not None
