"""The channel registry: one spec per channel kind, and the only place code asks what a kind can do.

A channel kind (``allegro``, ``ebay``, ``amazon``, ``google_merchant_feed``, ...) is registered with a
:class:`ChannelKind` that declares its family (a marketplace API or a feed file), its capabilities
(publish offers, read them back, import orders), the outbox fields pricing
queues for it, how its marketplace adapter is built from an Airflow connection, the settings model
that validates its ``settings`` in channels.yaml, and the asset its tasks write or read. DAGs, pricing,
the config model and the publish/reconcile entry points dispatch through :func:`get` and :func:`kinds`,
never on the kind's name.

Registration is a call (:func:`register`). The built-in kinds register themselves when their module is
imported; the first time it is asked, the registry imports every module of the
:mod:`commerce_sync.channels` package (found with :mod:`pkgutil`, no list to keep: a new kind is one
module there that calls :func:`register`), together with

- the modules named in ``COMMERCE_SYNC_CHANNEL_MODULES`` (comma-separated; e.g. a kind kept beside the
  DAGs on the workers' ``PYTHONPATH``), and
- any kind an installed package declares under the ``commerce_sync.channel_kinds`` entry-point group
  (the entry point names a module, or a callable that registers).

A test or a plugin may also call :func:`register` directly.

This module sits in the package's kernel: it imports no channel module statically, so the config model
can validate a channel's kind without an import cycle.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from commerce_sync.errors import ConfigError

if TYPE_CHECKING:
    from airflow.sdk import Asset

    from commerce_sync.channels.marketplace import Marketplace
    from commerce_sync.config import Channel
    from commerce_sync.connections import ConnectionInfo

log = logging.getLogger(__name__)

Family = Literal["marketplace", "feed"]
Capability = Literal["publish", "read_back", "import_orders"]
CAPABILITIES: frozenset[str] = frozenset({"publish", "read_back", "import_orders"})
OUTBOX_FIELDS = ("price", "quantity", "content")
"""Every field pricing can queue in ``hub.outbox``; a kind declares those it publishes (``outbox_fields``)."""
OFFER_FIELDS = ("price", "quantity")
"""The offer's fields: pricing computes and queues them together, so a kind takes both or neither."""

BUILTIN_PACKAGE = "commerce_sync.channels"
"""The package whose modules register the built-in kinds when imported (every module of it is imported)."""
ENTRY_POINT_GROUP = "commerce_sync.channel_kinds"
MODULES_ENV = "COMMERCE_SYNC_CHANNEL_MODULES"


@dataclass(frozen=True)
class ChannelKind:
    """What one channel kind is and can do.

    Args:
        name: the ``kind`` value in channels.yaml (lower case).
        family: ``marketplace`` (an API fed through ``hub.outbox``) or ``feed`` (a generated file).
        title: how messages and the UI name it ("Allegro", "Google Merchant Center").
        capabilities: what its tasks can do: ``publish``, ``read_back``, ``import_orders``
            (:meth:`~commerce_sync.channels.marketplace.Marketplace.read_orders`).
        asset: the Asset a channel of this kind writes (marketplace offers, or the channel's feed file).
        outbox_fields: the fields pricing queues in ``hub.outbox`` for it (empty: none, e.g. feeds): of
            :data:`OUTBOX_FIELDS`, both offer fields or neither, plus ``content`` (the product's name,
            description, GTIN, brand and category, queued when they change) for kinds that publish it.
        marketplace: builds the kind's :class:`~commerce_sync.channels.marketplace.Marketplace` from the
            channel's Airflow connection (marketplaces only).
        settings: pydantic model validating the channel's ``settings`` mapping (kind-specific options).
        needs_connection: a channel of this kind must name ``conn_id``.
        details: anything else the family needs (the feed format of a feed kind).
        pool: the Airflow pool every task calling this kind's API runs in (marketplaces), so publishing,
            reading back and importing orders of one marketplace share one concurrency bound.
        pool_slots: the pool's size: how many such tasks may call the API at once. Each task's client
            keeps its own token bucket, so the API sees at most ``pool_slots`` x that bucket's rate.
        rate_limit: the API's published limit the sizing is derived from (shown in ``commerce-sync pools``).
    """

    name: str
    family: Family
    title: str
    capabilities: frozenset[str]
    asset: Callable[[Channel], Asset]
    outbox_fields: tuple[str, ...] = ()
    marketplace: Callable[[ConnectionInfo], Marketplace] | None = None
    settings: type[BaseModel] | None = None
    needs_connection: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    pool: str | None = None
    pool_slots: int = 1
    rate_limit: str = ""

    def __post_init__(self) -> None:
        if self.pool is not None and (not self.pool or self.pool_slots < 1):
            raise ValueError(f"channel kind {self.name!r}: a pool needs a name and at least one slot")
        if not self.name or self.name != self.name.lower() or not self.name.replace("_", "").isalnum():
            raise ValueError(f"channel kind name {self.name!r}: use lower-case letters, digits and underscores")
        unknown = set(self.capabilities) - CAPABILITIES
        if unknown:
            raise ValueError(f"channel kind {self.name!r}: unknown capabilities {sorted(unknown)}")
        if self.family == "marketplace" and self.marketplace is None:
            raise ValueError(f"marketplace kind {self.name!r} needs a marketplace factory")
        fields = set(self.outbox_fields)
        unknown_fields = fields - set(OUTBOX_FIELDS)
        if unknown_fields:
            raise ValueError(
                f"channel kind {self.name!r}: unknown outbox_fields {sorted(unknown_fields)} "
                f"(known: {list(OUTBOX_FIELDS)})"
            )
        if fields & set(OFFER_FIELDS) and not fields >= set(OFFER_FIELDS):
            raise ValueError(
                f"channel kind {self.name!r}: pricing queues {list(OFFER_FIELDS)} together; "
                f"outbox_fields must hold both or neither, not {list(self.outbox_fields)}"
            )

    @property
    def uses_outbox(self) -> bool:
        """Pricing queues this kind's changed fields in ``hub.outbox`` (feeds are rewritten whole instead)."""
        return bool(self.outbox_fields)

    def queues(self, field_name: str) -> bool:
        """Pricing queues ``field_name`` in ``hub.outbox`` for channels of this kind."""
        return field_name in self.outbox_fields

    def can(self, capability: Capability) -> bool:
        """Whether channels of this kind support ``capability``."""
        return capability in self.capabilities

    def open(self, channel: Channel) -> Marketplace:
        """The marketplace adapter for ``channel``, from its Airflow connection, given the channel's settings."""
        from commerce_sync.connections import get_connection

        if self.marketplace is None:
            raise ConfigError(f"channel {channel.id!r}: {self.title} ({self.name}) is not a marketplace")
        if not channel.conn_id:
            raise ConfigError(f"channel {channel.id!r}: a {self.name} channel needs conn_id in channels.yaml")
        return self.build(channel, get_connection(channel.conn_id))

    def build(self, channel: Channel, info: ConnectionInfo) -> Marketplace:
        """The marketplace adapter for ``channel`` from an already resolved connection (async callers,
        e.g. the order doorbell, resolve it with :func:`~commerce_sync.connections.aget_connection`)."""
        if self.marketplace is None:
            raise ConfigError(f"channel {channel.id!r}: {self.title} ({self.name}) is not a marketplace")
        market = self.marketplace(info)
        market.configure(channel)
        return market


_kinds: dict[str, ChannelKind] = {}
_lock = threading.RLock()
_loaded = False


def register(spec: ChannelKind, *, replace: bool = False) -> ChannelKind:
    """Register a channel kind; a second registration of a name is refused unless ``replace``."""
    with _lock:
        if spec.name in _kinds and not replace and _kinds[spec.name] != spec:
            raise ValueError(f"channel kind {spec.name!r} is already registered")
        _kinds[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Forget a kind (tests that register their own kind clean up with this)."""
    with _lock:
        _kinds.pop(name, None)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        for module in builtin_modules():
            importlib.import_module(module)
        for module in filter(None, (m.strip() for m in os.environ.get(MODULES_ENV, "").split(","))):
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(f"{MODULES_ENV}: channel kind module {module!r} cannot be imported: {exc}") from exc
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = entry.load()
            except Exception as exc:  # a broken plugin must name itself, not break every kind
                raise ConfigError(f"channel kind plugin {entry.name!r} ({entry.value}) failed to load: {exc}") from exc
            if callable(loaded):
                loaded()
        _loaded = True


def builtin_modules() -> list[str]:
    """Every module of :data:`BUILTIN_PACKAGE`, by name (importing them registers the built-in kinds)."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    return sorted(
        f"{BUILTIN_PACKAGE}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.ispkg and not info.name.startswith("_")
    )


def get(name: str) -> ChannelKind:
    """The spec of kind ``name``.

    Raises:
        ConfigError: no such kind is registered (the message lists the registered ones).
    """
    _load()
    spec = _kinds.get(name)
    if spec is None:
        raise ConfigError(f"unknown channel kind {name!r} (registered: {', '.join(sorted(_kinds))})")
    return spec


def kinds(family: Family | None = None, capability: Capability | None = None) -> list[ChannelKind]:
    """Registered kinds, by name, optionally only one family and/or those with a capability."""
    _load()
    with _lock:
        specs = sorted(_kinds.values(), key=lambda spec: spec.name)
    return [
        spec
        for spec in specs
        if (family is None or spec.family == family) and (capability is None or spec.can(capability))
    ]


def fixed_asset(attribute: str) -> Callable[[Channel], Asset]:
    """An asset factory answering ``commerce_sync.assets.<attribute>`` for every channel of a kind.

    The assets module is imported when the asset is first asked for, not when the kind registers:
    it imports Airflow, which costs seconds that loading the configuration outside Airflow should not pay.
    """

    def asset(channel: Channel) -> Asset:
        from commerce_sync import assets

        found: Asset = getattr(assets, attribute)
        return found

    return asset


def channels_that(channels: Iterable[Channel], capability: Capability, family: Family | None = None) -> list[str]:
    """Ids of the enabled channels whose kind has ``capability`` (and is of ``family``), in config order."""
    wanted = {spec.name for spec in kinds(family, capability)}
    return [channel.id for channel in channels if channel.enabled and channel.kind in wanted]


@dataclass(frozen=True)
class PoolSpec:
    """One Airflow pool the registered kinds need: name, slots, and why that size."""

    name: str
    slots: int
    description: str


def pools() -> list[PoolSpec]:
    """The pools of the registered kinds, by name (kinds sharing a pool must agree on its size).

    Raises:
        ConfigError: two kinds name one pool with different sizes.
    """
    found: dict[str, PoolSpec] = {}
    for spec in kinds():
        if spec.pool is None:
            continue
        description = f"{spec.title} API: {spec.pool_slots} task(s) at once; {spec.rate_limit}".rstrip("; ")
        pool = PoolSpec(spec.pool, spec.pool_slots, description)
        known = found.get(spec.pool)
        if known is not None and known.slots != pool.slots:
            raise ConfigError(f"pool {spec.pool!r}: kinds disagree on its size ({known.slots} vs {pool.slots})")
        found.setdefault(spec.pool, pool)
    return [found[name] for name in sorted(found)]


def pool_of(kind: str) -> str | None:
    """The pool of kind ``kind`` (None: Airflow's default pool)."""
    return get(kind).pool
