"""``commerce-sync``: operator commands.

commerce-sync db setup            create the hub database if missing and apply migrations
commerce-sync db migrate          apply pending migrations
commerce-sync ledger verify       walk the audit chain (links, hashes, keyed MACs), recompute every
                                  transfer's change digest from audit.change, check the signed
                                  exported heads (--heads-dir DIR, default $COMMERCE_SYNC_LEDGER_HEADS_DIR)
                                  and report rows not yet anchored by a head; exit 1 on any problem
commerce-sync ledger export-head  write the signed chain head to --target DIR
commerce-sync trace CHANNEL SKU   where a published offer came from (--at ISO, --format json|text)
commerce-sync explain --channel C --sku S   how an offer's price and stock are computed (--format json|text)
commerce-sync orders              recent marketplace orders with their reservations and ERP hand-off
                                  (--channel C, --limit N, --format text|json); --oversold: the open
                                  oversold lines; --resolve CHANNEL:ORDER_ID --reason WHY [--by WHO]: mark
                                  that order's oversold lines resolved, a ledger transfer (exit 1 if it
                                  had none open)
commerce-sync status              per source and channel: last success, outbox backlog, open quarantine
                                  rows, held price moves; whether the event triggers are alive
commerce-sync pools               the Airflow pools the channel kinds need (--format airflow: the JSON
                                  `airflow pools import FILE` reads; the set-up scripts do that)

The sandbox and the demo are developer tools of their own distribution (``dev/``): ``commerce-sync-dev``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from commerce_sync.db import connect, ensure_database, lost_connection_is_transient, redact
from commerce_sync.errors import CommerceSyncError
from commerce_sync.settings import hub_database_url


def _db_setup(_: argparse.Namespace) -> int:
    from commerce_sync.hub.migrate import migrate

    url = hub_database_url()
    if ensure_database(url):
        print(f"created database {redact(url)}")
    applied = migrate(url)
    print(f"hub schema up to date ({'applied ' + ', '.join(applied) if applied else 'nothing to apply'})")
    return 0


def _db_migrate(_: argparse.Namespace) -> int:
    from commerce_sync.hub.migrate import migrate

    applied = migrate(hub_database_url())
    print(f"applied: {', '.join(applied) or 'nothing'}")
    return 0


def _verify_report(chain: dict[str, Any], heads: dict[str, Any] | None, expected_given: bool) -> list[str]:
    """The lines an operator reads (the JSON above them has every figure)."""
    lines = [
        f"chain: {chain['rows_checked']} rows, head seq {chain['head_seq']}; "
        f"{chain['legacy_rows']} legacy (unkeyed, written before keying) rows precede "
        f"{chain['keyed_rows']} keyed rows",
        f"change rows: {chain['transfers_with_changes']} transfers recomputed from audit.change, "
        f"{chain['change_mismatches']} mismatches",
    ]
    if chain["problem"]:
        lines.append(f"PROBLEM at seq {chain['first_broken_seq']}: {chain['problem']}")
    if heads is None:
        after = (
            "after the expected head"
            if expected_given
            else "(no head files checked: --heads-dir DIR or COMMERCE_SYNC_LEDGER_HEADS_DIR)"
        )
        lines.append(f"not yet anchored: {chain['not_anchored_rows']} rows {after}")
    else:
        lines.append(
            f"heads: {heads['heads_checked']} files, newest valid at seq {heads['anchored_seq']}; "
            f"not yet anchored: {heads['not_anchored_rows']} rows after it"
        )
        # The chain's own problem is the PROBLEM line above.
        lines.extend(f"PROBLEM in {p['file']}: {p['problem']}" for p in heads["problems"] if p["file"] != "(chain)")
    return lines


def _ledger_verify(args: argparse.Namespace) -> int:
    from commerce_sync.audit.heads import HEADS_DIR_ENV, verify_against_heads
    from commerce_sync.audit.ledger import ledger_key, verify

    key = ledger_key()  # LedgerKeyMissing names the variable (exit 2)
    heads_dir = args.heads_dir or os.environ.get(HEADS_DIR_ENV)
    ok = True
    heads: dict[str, Any] | None = None
    if heads_dir:
        with connect(hub_database_url()) as conn:
            checked = verify_against_heads(conn, Path(heads_dir), key)
        heads = checked.as_dict()
        ok = checked.ok
    expected = None
    if args.expect_head:
        seq, _, digest = args.expect_head.partition(":")
        expected = (int(seq), digest)
    if heads is None or expected is not None:
        with connect(hub_database_url()) as conn:
            result = verify(conn, expected_head=expected, key=key)
        chain = result.as_dict()
        ok = ok and result.ok
    else:
        chain = heads["chain"]
    if args.format == "json":
        print(json.dumps({"ok": ok, "chain": chain, "heads": heads}, indent=2, default=str))
    else:
        print("\n".join([f"ledger {'OK' if ok else 'BROKEN'}", *_verify_report(chain, heads, expected is not None)]))
    return 0 if ok else 1


def _ledger_export_head(args: argparse.Namespace) -> int:
    from commerce_sync.audit.heads import export_head, ledger_key

    key = ledger_key()
    with connect(hub_database_url()) as conn:
        path = export_head(conn, Path(args.target), key)
    print(f"exported ledger head to {path}")
    return 0


def _trace(args: argparse.Namespace) -> int:
    from commerce_sync.audit.trace import format_trace, trace_offer

    at = None
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError as exc:
            raise CommerceSyncError(f"--at {args.at!r} is not an ISO 8601 timestamp") from exc
        if at.tzinfo is None:
            raise CommerceSyncError(f"--at {args.at!r} needs a UTC offset, e.g. 2026-05-01T12:00:00+00:00")
    with connect(hub_database_url()) as conn:
        result = trace_offer(conn, args.channel, args.sku, at)
    print(json.dumps(result, indent=2) if args.format == "json" else format_trace(result))
    return 0 if not result["gaps"] else 1


def _explain(args: argparse.Namespace) -> int:
    from commerce_sync.config import load_config
    from commerce_sync.pricing.explain import explain_offer, format_explanation

    with connect(hub_database_url()) as conn:
        result = explain_offer(conn, load_config(), args.channel, args.sku)
    print(json.dumps(result, indent=2) if args.format == "json" else format_explanation(result))
    return 0


def _format_order(row: dict[str, Any]) -> list[str]:
    """An order of ``audit.view_queries.list_orders`` as the lines an operator reads."""
    error = f" error: {row['erp_error']}" if row["erp_error"] else ""
    lines = [
        f"{row['channel']}:{row['order_id']}  {row['status']} ({row['marketplace_status']})  "
        f"first seen {row['first_seen_at']:%Y-%m-%d %H:%M:%S %Z}  ERP {row['erp_state']}{error}"
    ]
    for line in row["lines"]:
        oversold = f", oversold {line['oversold']}" if line["oversold"] else ""
        resolved = " (resolved)" if line["oversold"] and line["oversold_resolved_at"] else ""
        lines.append(
            f"    {line['line_id']}: {line['sku'] or '(unknown SKU, offer ' + str(line['offer_id']) + ')'} "
            f"x {line['units']}, {line['reservation'] or 'no reservation'}{oversold}{resolved}"
        )
    return lines


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return f"uid {os.getuid()}"


def _orders(args: argparse.Namespace) -> int:
    from commerce_sync.orders.oversold import open_oversold, resolve

    if args.limit < 1:
        raise CommerceSyncError(f"--limit {args.limit}: must be at least 1")
    dsn = hub_database_url()
    if args.resolve:
        channel, sep, order_id = args.resolve.partition(":")
        if not sep or not channel or not order_id:
            raise CommerceSyncError(f"--resolve {args.resolve!r}: expected CHANNEL:ORDER_ID, e.g. allegro:29d1-a")
        if not (args.reason or "").strip():
            raise CommerceSyncError(f"--resolve {args.resolve}: --reason is required (it goes into the ledger)")
        count = resolve(dsn, args.resolve, by=args.by or _os_user(), reason=args.reason)
        print(f"{args.resolve}: {count} oversold line(s) marked resolved")
        return 0 if count else 1
    if args.oversold:
        open_lines = [o for o in open_oversold(dsn) if not args.channel or o.channel == args.channel]
        if args.format == "json":
            print(json.dumps([vars(o) for o in open_lines], indent=2, default=str))
        else:
            print(f"{len(open_lines)} open oversold line(s)")
            for o in open_lines:
                alerted = f"alerted {o.alerted_at:%Y-%m-%d %H:%M:%S %Z}" if o.alerted_at else "not alerted yet"
                print(f"  {o.describe()} (reserved {o.reserved_at:%Y-%m-%d %H:%M:%S %Z}, {alerted})")
        return 0
    from commerce_sync.audit.view_queries import OrderFilter, list_orders

    with connect(dsn) as conn:
        rows, total = list_orders(conn, OrderFilter(channel=args.channel or ""), page=1, page_size=args.limit)
    if args.format == "json":
        print(json.dumps({"total": total, "orders": rows}, indent=2, default=str))
    else:
        print(f"{len(rows)} of {total} order(s), newest first")
        for row in rows:
            print("\n".join(_format_order(row)))
    return 0


def _status(args: argparse.Namespace) -> int:
    from commerce_sync.audit.health import format_health, health

    with connect(hub_database_url()) as conn:
        report = health(conn)
    print(json.dumps(report.as_dict(), indent=2, default=str) if args.format == "json" else format_health(report))
    return 0


def _pools(args: argparse.Namespace) -> int:
    from commerce_sync import registry

    pools = registry.pools()
    if args.format == "airflow":
        document = {p.name: {"slots": p.slots, "description": p.description, "include_deferred": False} for p in pools}
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print("\n".join(f"{p.name:16} {p.slots:>3} slot(s)  {p.description}" for p in pools))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="commerce-sync", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="hub database").add_subparsers(dest="action", required=True)
    db.add_parser("setup", help="create the database if missing and migrate").set_defaults(func=_db_setup)
    db.add_parser("migrate", help="apply pending migrations").set_defaults(func=_db_migrate)

    led = sub.add_parser("ledger", help="audit ledger").add_subparsers(dest="action", required=True)
    verify = led.add_parser("verify", help="verify the hash chain")
    verify.add_argument("--expect-head", help="SEQ:HASH of a previously exported chain head")
    verify.add_argument(
        "--heads-dir",
        help="directory of signed head files (ledger export-head) to check against "
        "(default: $COMMERCE_SYNC_LEDGER_HEADS_DIR if set)",
    )
    verify.add_argument("--format", choices=("text", "json"), default="text")
    verify.set_defaults(func=_ledger_verify)
    export = led.add_parser("export-head", help="write the signed chain head outside the database")
    export.add_argument("--target", required=True, help="directory for ledger-head-<seq>-<timestamp>.json")
    export.set_defaults(func=_ledger_export_head)

    trace = sub.add_parser("trace", help="trace a channel offer back to its sources (exit 1 if any gap)")
    trace.add_argument("channel")
    trace.add_argument("sku")
    trace.add_argument("--at", help="trace the state at this ISO 8601 time (with UTC offset)")
    trace.add_argument("--format", choices=("json", "text"), default="json")
    trace.set_defaults(func=_trace)

    explain = sub.add_parser("explain", help="how an offer's price and stock are computed, step by step")
    explain.add_argument("--channel", required=True)
    explain.add_argument("--sku", required=True)
    explain.add_argument("--format", choices=("json", "text"), default="text")
    explain.set_defaults(func=_explain)

    orders = sub.add_parser("orders", help="recent marketplace orders; open oversold lines; resolve one order")
    orders.add_argument("--channel", help="only this channel's orders (or oversold lines)")
    orders.add_argument("--limit", type=int, default=20, help="how many orders, newest first (default 20)")
    orders.add_argument("--format", choices=("text", "json"), default="text")
    action = orders.add_mutually_exclusive_group()
    action.add_argument("--oversold", action="store_true", help="the oversold lines not resolved yet")
    action.add_argument("--resolve", metavar="CHANNEL:ORDER_ID", help="mark the order's oversold lines resolved")
    orders.add_argument("--reason", help="with --resolve: why (cancelled on the marketplace, unit sourced, ...)")
    orders.add_argument("--by", help="with --resolve: who decides (default: the OS user); in the ledger")
    orders.set_defaults(func=_orders)

    status = sub.add_parser("status", help="health per source and channel, and of the event triggers")
    status.add_argument("--format", choices=("text", "json"), default="text")
    status.set_defaults(func=_status)

    pools = sub.add_parser("pools", help="the Airflow pools of the registered channel kinds")
    pools.add_argument("--format", choices=("text", "airflow"), default="text")
    pools.set_defaults(func=_pools)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with lost_connection_is_transient():
            return int(args.func(args))
    except CommerceSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
