"""``commerce-sync``: operator commands.

commerce-sync db setup            create the hub database if missing and apply migrations
commerce-sync db migrate          apply pending migrations
commerce-sync ledger verify       walk the audit chain; exit 1 on the first broken row
                                  (--heads-dir DIR: also check every signed exported head)
commerce-sync ledger export-head  write the signed chain head to --target DIR
commerce-sync trace CHANNEL SKU   where a published offer came from (--at ISO, --format json|text)
commerce-sync explain --channel C --sku S   how an offer's price and stock are computed (--format json|text)

The sandbox and the demo are developer tools of their own distribution (``dev/``): ``commerce-sync-dev``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

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


def _ledger_verify(args: argparse.Namespace) -> int:
    from commerce_sync.audit.ledger import verify

    if args.heads_dir:
        from commerce_sync.audit.heads import ledger_key, verify_against_heads

        key = ledger_key()
        with connect(hub_database_url()) as conn:
            checked = verify_against_heads(conn, Path(args.heads_dir), key)
        print(json.dumps(checked.as_dict(), indent=2))
        if args.expect_head is None:
            return 0 if checked.ok else 1
        if not checked.ok:
            return 1
    expected = None
    if args.expect_head:
        seq, _, digest = args.expect_head.partition(":")
        expected = (int(seq), digest)
    with connect(hub_database_url()) as conn:
        result = verify(conn, expected_head=expected)
    print(json.dumps(result.__dict__, indent=2))
    return 0 if result.ok else 1


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
    verify.add_argument("--heads-dir", help="directory of signed head files (ledger export-head) to check against")
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
