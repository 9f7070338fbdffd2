"""Benchmark: parse a large supplier feed into staging (stream + COPY) and report peak RSS and items/s.

    .venv/bin/python bench/sources.py                 # 1,000,000 items, XML + BMEcat + CSV (+ gzip XML)
    .venv/bin/python bench/sources.py --n 200000 --formats xml

For each format a feed of N items is generated (streamed to disk, deterministic), then a fresh
child process runs the real ``supplier_load.stage`` (the reader for the format, then one COPY into
``staging.supplier_offer``) against a throwaway hub database ``cs_bench_sources_<pid>`` and reports
its wall time, items/s and peak RSS (``VmHWM``; the target is < 300 MB at 1M items). The feed files
go to ``bench/results/work-sources-<N>/``; results to ``bench/results/sources-latest.json``. Nothing
is asserted: the numbers are reported.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

SUPPLIERS: dict[str, dict[str, Any]] = {
    "xml": {
        "format": "xml",
        "xml": {
            "record_tag": "product",
            "fields": {
                "supplier_sku": "code",
                "gtin": "ean",
                "name": "name",
                "purchase_price": "price/net",
                "currency": "price/currency",
                "quantity": "stock",
            },
        },
    },
    "bmecat": {"format": "bmecat"},
    "csv": {
        "format": "csv",
        "csv": {
            "delimiter": ";",
            "encoding": "cp1250",
            "decimal_separator": ",",
            "columns": {
                "supplier_sku": "Indeks",
                "gtin": "EAN",
                "name": "Nazwa",
                "purchase_price": "Cena netto",
                "quantity": "Stan",
            },
        },
    },
}


def _ean(i: int) -> str:
    from commerce_sync.sources.gtin import check_digit

    body = f"590{i:09d}"
    return body + str(check_digit(body))


def _price(i: int) -> Decimal:
    return Decimal(500 + (i * 7919) % 200_000) / 100


def generate(fmt: str, n: int, path: Path) -> None:
    """Write an N-item feed in ``fmt`` to ``path`` (streamed: memory does not grow with N)."""
    with path.open("w", encoding="cp1250" if fmt == "csv" else "utf-8", newline="") as out:
        if fmt == "xml":
            out.write('<?xml version="1.0" encoding="UTF-8"?>\n<catalog supplier="bench"><products>\n')
            for i in range(n):
                out.write(
                    f"<product><code>B{i:08d}</code><ean>{_ean(i)}</ean><name>Produkt nr {i} żółty</name>"
                    f"<price><net>{_price(i)}</net><currency>PLN</currency></price><stock>{i % 50}</stock></product>\n"
                )
            out.write("</products></catalog>\n")
        elif fmt == "bmecat":
            out.write(
                '<?xml version="1.0" encoding="UTF-8"?>\n<BMECAT version="2005" xmlns="http://www.bmecat.org/bmecat/2005">'
                "<HEADER><CATALOG><LANGUAGE>pol</LANGUAGE><CATALOG_ID>BENCH</CATALOG_ID><CATALOG_VERSION>1</CATALOG_VERSION>"
                "<CURRENCY>PLN</CURRENCY></CATALOG></HEADER><T_NEW_CATALOG>\n"
            )
            for i in range(n):
                out.write(
                    f'<PRODUCT mode="new"><SUPPLIER_PID>B{i:08d}</SUPPLIER_PID><PRODUCT_DETAILS>'
                    f"<DESCRIPTION_SHORT>Produkt nr {i}</DESCRIPTION_SHORT>"
                    f'<INTERNATIONAL_PID type="gtin">{_ean(i)}</INTERNATIONAL_PID></PRODUCT_DETAILS>'
                    f'<PRODUCT_PRICE_DETAILS><PRODUCT_PRICE price_type="net_list"><PRICE_AMOUNT>{_price(i) + 1}'
                    f'</PRICE_AMOUNT></PRODUCT_PRICE><PRODUCT_PRICE price_type="net_customer"><PRICE_AMOUNT>'
                    f"{_price(i)}</PRICE_AMOUNT><PRICE_CURRENCY>PLN</PRICE_CURRENCY></PRODUCT_PRICE>"
                    f"</PRODUCT_PRICE_DETAILS><USER_DEFINED_EXTENSIONS><UDX.STOCK>{i % 50}</UDX.STOCK>"
                    "</USER_DEFINED_EXTENSIONS></PRODUCT>\n"
                )
            out.write("</T_NEW_CATALOG></BMECAT>\n")
        else:
            out.write("Indeks;EAN;Nazwa;Cena netto;Stan\r\n")
            for i in range(n):
                price = str(_price(i)).replace(".", ",")
                out.write(f'B{i:08d};{_ean(i)};"Produkt ""nr"" {i} żółty";{price};{i % 50}\r\n')


def _peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(fmt: str, path: Path, dsn: str) -> dict[str, Any]:
    """Run in a fresh process: fetch (hash) + stage one feed; return the measurements."""
    from commerce_sync.config import Supplier
    from commerce_sync.db import connect
    from commerce_sync.sources.supplier_load import stage
    from commerce_sync.sources.transports import fetch

    config = SUPPLIERS[fmt.removesuffix("+gz")]
    supplier = Supplier.model_validate(
        {
            "id": "bench",
            "name": "bench",
            "transport": {"type": "file", "path": str(path), "settle_seconds": 0},
            **config,
        }
    )
    rss_before = _peak_rss_mb()
    started = time.perf_counter()
    fetched = fetch(supplier, None, path.parent / "dl", None)
    fetch_seconds = time.perf_counter() - started
    transfer_id = uuid.uuid4()
    with connect(dsn) as db:
        count, _partial = stage(db, supplier, fetched, transfer_id)
        db.execute("DELETE FROM staging.supplier_offer WHERE transfer_id = %s", (transfer_id,))
    seconds = time.perf_counter() - started
    if fetched.temporary and fetched.path is not None:
        fetched.path.unlink(missing_ok=True)
    return {
        "format": fmt,
        "items": count,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "seconds": round(seconds, 2),
        "fetch_seconds": round(fetch_seconds, 2),
        "items_per_s": round(count / seconds),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_after_imports_mb": round(rss_before, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--formats", default="xml,bmecat,csv,xml+gz")
    parser.add_argument("--keep-files", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("FORMAT", "PATH", "DSN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.child[2])))
        return

    from commerce_sync.db import drop_database, ensure_database, redact, with_database
    from commerce_sync.hub.migrate import migrate
    from commerce_sync.settings import hub_database_url

    work = ROOT / "bench" / "results" / f"work-sources-{args.n}"
    work.mkdir(parents=True, exist_ok=True)
    dsn = with_database(hub_database_url(), f"cs_bench_sources_{os.getpid()}")
    ensure_database(dsn)
    results: list[dict[str, Any]] = []
    try:
        migrate(dsn)
        for fmt in args.formats.split(","):
            base = fmt.removesuffix("+gz")
            path = work / f"feed-{base}.{'csv' if base == 'csv' else 'xml'}"
            if not path.exists():
                started = time.perf_counter()
                generate(base, args.n, path)
                print(
                    f"generated {path.name}: {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - started:.0f}s"
                )
            if fmt.endswith("+gz"):
                packed = path.with_name(path.name + ".gz")
                if not packed.exists():
                    with path.open("rb") as source, gzip.open(packed, "wb", compresslevel=6) as target:
                        shutil.copyfileobj(source, target, 1 << 20)
                path = packed
            out = subprocess.run(
                [sys.executable, __file__, "--child", fmt, str(path), dsn],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT / "include")},
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(result)
            print(
                f"{fmt:8} {result['items']:>9,} items {result['file_mb']:>7} MB  {result['seconds']:>7}s "
                f"{result['items_per_s']:>8,} items/s  peak RSS {result['peak_rss_mb']} MB",
                flush=True,
            )
    finally:
        drop_database(dsn)
        if not args.keep_files:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "sources",
        "n": args.n,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "hub": redact(dsn),
        "target_peak_rss_mb": 300,
        "results": results,
    }
    target = ROOT / "bench" / "results" / "sources-latest.json"
    target.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
