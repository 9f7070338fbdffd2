"""Run the sandbox servers: ``python -m commerce_sync_sandbox serve --data-dir DIR``.

Writes the supplier feeds into ``DIR/feeds``, keeps the marketplace simulators' state in
``DIR/allegro_state.json``, ``DIR/<name>_state.json`` beside it (so a restarted sandbox still shows what
was published), prints one line with the base URLs and serves until SIGINT/SIGTERM. Every simulator the
sandbox has (:mod:`commerce_sync_sandbox.simulators`) gets ``--<name>-port``, whose default is
``SANDBOX_<NAME>_PORT`` or the simulator's own default port.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from commerce_sync.settings import data_dir
from commerce_sync_sandbox.feeds import write_feeds
from commerce_sync_sandbox.server import SandboxServer
from commerce_sync_sandbox.simulators import simulators


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m commerce_sync_sandbox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the supplier feeds and the marketplace simulators")
    serve.add_argument("--data-dir", type=Path, default=data_dir() / "sandbox")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--feeds-port", type=int, default=int(os.environ.get("SANDBOX_FEEDS_PORT") or 8701))
    for spec in simulators():
        serve.add_argument(f"--{spec.name}-port", type=int, default=spec.port(), help=f"{spec.title} simulator")
    serve.add_argument("--products", type=int, default=300, help="catalog size")
    serve.add_argument("--seed", type=int, default=42, help="catalog seed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    feeds_dir = args.data_dir / "feeds"
    write_feeds(feeds_dir, args.products, args.seed)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    server = SandboxServer(
        feeds_dir,
        args.data_dir / "allegro_state.json",
        host=args.host,
        feeds_port=args.feeds_port,
        catalog_n=args.products,
        seed=args.seed,
        ports={spec.name: getattr(args, f"{spec.name}_port") for spec in simulators()},
    )
    with server:
        urls = "  ".join(f"{name}: {url}" for name, url in server.urls().items())
        print(f"sandbox feeds: {server.feeds_url}/feeds/  {urls}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
