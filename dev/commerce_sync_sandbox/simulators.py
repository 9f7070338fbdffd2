"""The simulator registry: every marketplace simulator of the sandbox, found without a list to keep.

A simulator module is a module of this package whose name ends in ``_sim``; importing it calls
:func:`register` with a :class:`SimulatorSpec` (its name, default port, how to build the simulator and
its HTTP server). The sandbox server (:mod:`commerce_sync_sandbox.server`), its command line and the
demo start every simulator :func:`simulators` finds the same way, so adding a marketplace's simulator
touches no other module of the sandbox.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

PACKAGE = "commerce_sync_sandbox"
SUFFIX = "_sim"


@dataclass(frozen=True)
class SimulatorContext:
    """What the sandbox server gives every simulator it builds.

    Args:
        state_file: the sandbox's state file (the Allegro simulator's); other simulators keep their
            state beside it (:meth:`beside`), so a restarted sandbox shows what was published.
        catalog_n: catalog size of the seeded offers.
        seed: catalog seed.
        options: further settings by name (``client_id``, ``client_secret``, ``token_ttl``, ...); a
            simulator takes those it knows.
    """

    state_file: Path
    catalog_n: int = 300
    seed: int = 42
    options: dict[str, Any] = field(default_factory=dict)

    def beside(self, name: str) -> Path:
        """A state file named ``name`` in the state file's directory."""
        return self.state_file.with_name(name)


@dataclass(frozen=True)
class SimulatorSpec:
    """One simulator as the sandbox server starts it.

    Args:
        name: lower-case name; also ``--<name>-port`` and ``SANDBOX_<NAME>_PORT``.
        title: how messages name it.
        default_port: the port ``sandbox serve`` binds unless told otherwise.
        build: makes the simulator from the server's context.
        server: binds its HTTP server to an address for a built simulator.
        summary: given its base URL, one line for the demo's summary of what the simulator saw (optional).
    """

    name: str
    title: str
    default_port: int
    build: Callable[[SimulatorContext], Any]
    server: Callable[[tuple[str, int], Any], ThreadingHTTPServer]
    summary: Callable[[str], str | None] | None = None

    @property
    def port_variable(self) -> str:
        """The environment variable naming its port (``SANDBOX_<NAME>_PORT``)."""
        return f"SANDBOX_{self.name.upper()}_PORT"

    def port(self) -> int:
        """Its port: ``SANDBOX_<NAME>_PORT`` if set, else the default."""
        value = os.environ.get(self.port_variable, "").strip()
        if not value:
            return self.default_port
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{self.port_variable}={value!r}: a port number is expected") from None


_specs: dict[str, SimulatorSpec] = {}
_lock = threading.RLock()


def register(spec: SimulatorSpec) -> SimulatorSpec:
    """Register a simulator (a second registration of a name replaces the first: module reloads)."""
    with _lock:
        _specs[spec.name] = spec
    return spec


def simulator_modules() -> list[str]:
    """Every ``*_sim`` module of the sandbox package, by name."""
    package = importlib.import_module(PACKAGE)
    return sorted(
        f"{PACKAGE}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.ispkg and info.name.endswith(SUFFIX)
    )


def simulators() -> list[SimulatorSpec]:
    """Every registered simulator, by name (importing the simulator modules first)."""
    for module in simulator_modules():
        importlib.import_module(module)
    with _lock:
        return sorted(_specs.values(), key=lambda spec: spec.name)
