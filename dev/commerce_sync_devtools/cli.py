"""``commerce-sync-dev``: developer commands around the sandbox (not shipped with the product).

commerce-sync-dev sandbox prepare          load the sandbox ERP database and write the sandbox feeds
commerce-sync-dev sandbox set-price S P    change one purchase price in the sandbox ERP
commerce-sync-dev sandbox serve [...]      run the supplier feed server and the marketplace simulators
                                           (the options of ``python -m commerce_sync_sandbox serve``)
commerce-sync-dev sandbox buy --channel C --sku S --quantity N [--unpaid] [--force]
                                           buy on a marketplace simulator (allegro, ebay, amazon);
                                           prints the order id; the listing's quantity drops
commerce-sync-dev sandbox pay --channel C --order ID       the buyer pays an unpaid order
commerce-sync-dev sandbox cancel --channel C --order ID    cancel an order (the units go back on the listing)
commerce-sync-dev demo                     run every DAG once against the sandbox and print a summary
commerce-sync-dev celery [...]             Airflow on the CeleryExecutor: api-server, scheduler, dag-processor,
                                           triggerer, N workers (--workers 2), Flower (--flower-port P)

The simulators are found at ``http://127.0.0.1:$SANDBOX_<CHANNEL>_PORT`` (8702, 8703, 8704 by default) or
``--url``.

The databases come from ``HUB_DATABASE_URL`` and ``ERP_DATABASE_URL`` (default ``commerce_erp`` beside the
hub), the sandbox's files from ``COMMERCE_SYNC_DATA_DIR``/sandbox, as for ``commerce-sync``.
"""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal, InvalidOperation

from commerce_sync.errors import CommerceSyncError
from commerce_sync.settings import hub_database_url
from commerce_sync_sandbox.prepare import erp_database_url, prepare_sandbox, sandbox_dir


def _sandbox_prepare(_: argparse.Namespace) -> int:
    print(prepare_sandbox(erp_database_url(), sandbox_dir()))
    return 0


def _sandbox_set_price(args: argparse.Namespace) -> int:
    from commerce_sync_sandbox.erp import set_purchase_price

    try:
        price = Decimal(args.price)
    except InvalidOperation:
        raise CommerceSyncError(f"price {args.price!r} is not a decimal number (e.g. 999.00)") from None
    set_purchase_price(erp_database_url(), args.sku, price)
    print(f"{args.sku}: purchase price set to {args.price} in the sandbox ERP")
    return 0


def _sandbox_serve(args: argparse.Namespace) -> int:
    from commerce_sync_sandbox.__main__ import main as sandbox_main

    return sandbox_main(["serve", *args.options])


SIMULATOR_PORTS = {
    "allegro": ("SANDBOX_ALLEGRO_PORT", 8702),
    "ebay": ("SANDBOX_EBAY_PORT", 8703),
    "amazon": ("SANDBOX_AMAZON_PORT", 8704),
}


def simulator_url(channel: str, url: str | None = None) -> str:
    """The base URL of a marketplace simulator: ``url``, or loopback and the channel's port variable."""
    if url:
        return url
    variable, default = SIMULATOR_PORTS[channel]
    return f"http://127.0.0.1:{os.environ.get(variable, str(default))}"


def _sandbox_order(args: argparse.Namespace) -> int:
    from commerce_sync_sandbox import orders

    url = simulator_url(args.channel, args.url)
    try:
        if args.action == "buy":
            order_id = orders.buy(url, args.sku, args.quantity, paid=not args.unpaid, force=args.force)
            print(order_id)
        elif args.action == "pay":
            print(f"{args.channel} order {orders.pay(url, args.order)['id']}: paid")
        else:
            print(f"{args.channel} order {orders.cancel(url, args.order)['id']}: cancelled")
    except orders.OrderBookError as exc:
        raise CommerceSyncError(f"{args.channel} simulator: {exc.message}") from None
    except OSError as exc:
        raise CommerceSyncError(
            f"{args.channel} simulator at {url} is not reachable ({exc}); is the sandbox serving?"
        ) from None
    return 0


def _demo(_: argparse.Namespace) -> int:
    from commerce_sync_devtools.demo import run_demo

    return run_demo(erp_url=erp_database_url(), hub_url=hub_database_url())


def _celery(args: argparse.Namespace) -> int:
    from commerce_sync_devtools.celery_stack import main as celery_main

    return celery_main(args.options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="commerce-sync-dev", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sandbox = sub.add_parser("sandbox", help="sandbox data and servers").add_subparsers(dest="action", required=True)
    sandbox.add_parser("prepare", help="load the ERP demo DB and write feeds").set_defaults(func=_sandbox_prepare)
    set_price = sandbox.add_parser("set-price", help="change one purchase price in the sandbox ERP")
    set_price.add_argument("sku")
    set_price.add_argument("price")
    set_price.set_defaults(func=_sandbox_set_price)
    serve = sandbox.add_parser(
        "serve", help="serve the supplier feeds and the marketplace simulators until Ctrl-C", add_help=False
    )
    serve.set_defaults(func=_sandbox_serve)  # its options are the sandbox server's own (main passes them on)

    channels = sorted(SIMULATOR_PORTS)
    buy = sandbox.add_parser("buy", help="buy on a marketplace simulator (prints the order id)")
    buy.add_argument("--channel", required=True, choices=channels)
    buy.add_argument("--sku", required=True)
    buy.add_argument("--quantity", type=int, default=1)
    buy.add_argument("--unpaid", action="store_true", help="bought, not paid yet")
    buy.add_argument("--force", action="store_true", help="sell even if fewer units are listed (oversell)")
    buy.add_argument("--url", help="the simulator's base URL (default: loopback and its port variable)")
    buy.set_defaults(func=_sandbox_order)
    for action, text in (("pay", "the buyer pays an order"), ("cancel", "cancel an order")):
        change = sandbox.add_parser(action, help=text)
        change.add_argument("--channel", required=True, choices=channels)
        change.add_argument("--order", required=True)
        change.add_argument("--url", help="the simulator's base URL")
        change.set_defaults(func=_sandbox_order)

    sub.add_parser("demo", help="run every DAG once against the sandbox").set_defaults(func=_demo)
    sub.add_parser(
        "celery", help="run Airflow on the CeleryExecutor (every component, N workers) until Ctrl-C", add_help=False
    ).set_defaults(func=_celery)  # its options are celery_stack's own (main passes them on)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, options = parser.parse_known_args(argv)
    if options and args.func not in (_sandbox_serve, _celery):
        parser.error(f"unrecognized arguments: {' '.join(options)}")
    args.options = options
    try:
        return int(args.func(args))
    except CommerceSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
