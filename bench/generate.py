"""Deterministic benchmark data: an ERP of N products, S supplier feeds, a change set.

Nothing depends on the clock or on a random generator's state: every value of product ``i`` is a
pure function of ``(i, seed)`` (a 64-bit mix), so the same arguments give the same rows and
byte-identical feed files on any machine, and any row can be recomputed on its own.

* ERP: ``erp.products`` with the sandbox DDL (created by ``commerce_sync_sandbox.erp.load_erp``
  with ``n=0``), filled with one ``COPY`` (``load_erp`` builds a Python catalog object per row
  and goes through a temp table, which is needlessly slow at 1M). SKUs are ``SKU-0000001``...,
  EANs are valid EAN-13s (prefix 590), ~10 % have zero stock, ~2 % are inactive, ~10 % carry 8 %
  VAT. ``updated_at`` lies in 2024, before "now", so changed rows (stamped with the clock by the
  ERP's trigger) sort after the hub's watermark.
* Suppliers: supplier ``k`` carries each product with probability ``SHARES[k % 4]`` (independent
  per supplier, so catalogs overlap), at the ERP price x 0.90..1.10 and stock 0..500, plus two
  deliberately broken records that validation must quarantine. Even ``k`` write acme-style XML
  (UTF-8), odd ``k`` bravo-style CSV (cp1250, ``;``, decimal comma). Beside each feed, a ``.tsv``
  holds the same records as plain COPY text for the I/O floor.
* Changes: :func:`apply_erp_changes` raises the purchase price of every ``round(1/rate)``-th SKU
  by 5 % (an ``UPDATE``, so the ERP trigger bumps ``updated_at`` like a buyer's edit would).

Usage: ``python bench/generate.py --n 100000 --suppliers 2 --out bench/results/work``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from commerce_sync.db import connect
from commerce_sync_sandbox import erp
from commerce_sync_sandbox.catalog import ean_for
from commerce_sync_sandbox.erp import load_erp

SEED = 20261101
SHARES = (0.70, 0.50, 0.60, 0.40)
ERP_COLUMNS = erp.COLUMNS  # the sandbox ERP table the pipeline reads
_MASK = (1 << 64) - 1
_CATEGORIES = ("Narzędzia", "Ogród", "Kuchnia", "Elektronika")
_KINDS = (
    "Wkrętarka akumulatorowa",
    "Wiertarka udarowa",
    "Szlifierka kątowa",
    "Wąż ogrodowy",
    "Sekator nożycowy",
    "Czajnik elektryczny",
    "Patelnia tytanowa",
    "Słuchawki bezprzewodowe",
    "Głośnik Bluetooth",
    "Powerbank",
    "Cordless Impact Driver",
    "Młynek do kawy",
)
_BRANDS = ("Bosch", "Makita", "Gardena", "Fiskars", "Tefal", "Philips", "Xiaomi", "JBL", "Anker", "Kärcher")
_VARIANTS = ("18V", "750W", "125 mm", '1/2" 20 m', "1,7 l", "28 cm", "ANC", "20000 mAh", "PD 65W", "zestaw")
_FEATURES = (
    "Solidne wykonanie i dwuletnia gwarancja producenta.",
    "Idealny do codziennego użytku w domu i w warsztacie.",
    "Lekka konstrukcja ułatwia pracę także przez dłuższy czas.",
    "Produkt fabrycznie nowy, oryginalnie zapakowany.",
)
_BASE_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z


def mix(*values: int) -> int:
    """A 64-bit mix (splitmix64 finaliser) of the values: a stable pseudo-random number."""
    z = SEED
    for value in values:
        z = (z + 0x9E3779B97F4A7C15 + value) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        z ^= z >> 31
    return z


def sku_for(i: int) -> str:
    """SKU of product ``i`` (1-based)."""
    return f"SKU-{i:07d}"


@dataclass(frozen=True)
class Product:
    """The ERP fields of one product that feeds and checks need."""

    sku: str
    ean: str
    name: str
    cents: int
    stock: int


def product(i: int) -> Product:
    """Product ``i`` without the text fields only the ERP needs."""
    h = mix(i)
    name = f"{_KINDS[h % 12]} {_BRANDS[(h >> 8) % 10]} {_VARIANTS[(h >> 16) % 10]} M{(h >> 24) % 1000:03d}"
    cents = 500 + (h >> 40) % 199_500  # 5.00 .. 2000.00
    stock = 0 if (h >> 34) % 10 == 0 else 1 + (h >> 50) % 200
    return Product(sku_for(i), ean_for(i), name, cents, stock)


def erp_line(i: int) -> str:
    """One ``erp.products`` row as COPY text (no value contains a tab, newline or backslash)."""
    p = product(i)
    h = mix(i, 1)
    category = _CATEGORIES[h % 4]
    brand = _BRANDS[(mix(i) >> 8) % 10]
    features = " ".join(_FEATURES[: (h >> 4) % 3])
    description = f"{p.name}. {features}".strip()
    vat = "0.08" if (h >> 8) % 10 == 0 else "0.23"
    reserved = (h >> 16) % (min(p.stock, 5) + 1)
    active = "f" if (h >> 24) % 50 == 0 else "t"
    updated = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(_BASE_EPOCH + i))
    price = f"{p.cents // 100}.{p.cents % 100:02d}"
    return (
        f"{p.sku}\t{p.ean}\t{p.name}\t{brand}\t{category}\t{description}\t{price}\t{vat}\t"
        f"{p.stock}\t{reserved}\t{active}\t{updated}\n"
    )


def load_erp_rows(erp_dsn: str, n: int, chunk: int = 20_000) -> int:
    """(Re)create ``erp.products`` with the sandbox DDL and COPY ``n`` generated rows into it."""
    load_erp(erp_dsn, n=0, reset=True)
    columns = ", ".join(ERP_COLUMNS)
    with connect(erp_dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY erp.products ({columns}) FROM STDIN") as copy:
            for start in range(1, n + 1, chunk):
                copy.write("".join(erp_line(i) for i in range(start, min(start + chunk, n + 1))).encode())
        cur.execute("ANALYZE erp.products")
    return n


@dataclass(frozen=True)
class SupplierSpec:
    """One generated supplier: id, format, prefix of its SKUs and share of the catalog."""

    index: int
    id: str
    format: str
    prefix: str
    share: float

    def carries(self, i: int) -> bool:
        """Whether this supplier's feed lists product ``i``."""
        return mix(i, 100 + self.index) % 10_000 < self.share * 10_000


def supplier_specs(count: int) -> list[SupplierSpec]:
    """``count`` suppliers: acme (XML), bravo (CSV), then sup3, sup4, ... alternating formats."""
    names = ("acme", "bravo")
    specs = []
    for k in range(count):
        sid = names[k] if k < len(names) else f"sup{k + 1}"
        fmt = "xml" if k % 2 == 0 else "csv"
        specs.append(SupplierSpec(k, sid, fmt, sid[:3].upper() + (str(k + 1) if k >= 2 else ""), SHARES[k % 4]))
    return specs


def _offer(spec: SupplierSpec, i: int) -> tuple[str, str, str, int, int]:
    p = product(i)
    h = mix(i, 200 + spec.index)
    cents = max(1, p.cents * (900 + h % 201) // 1000)
    return f"{spec.prefix}-{i:07d}", p.ean, p.name, cents, (h >> 12) % 501


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_supplier_feed(spec: SupplierSpec, n: int, directory: Path) -> dict[str, object]:
    """Write the supplier's feed (and its ``.tsv`` twin for the floor); return its description."""
    directory.mkdir(parents=True, exist_ok=True)
    feed = directory / f"{spec.id}.{spec.format}"
    tsv = directory / f"{spec.id}.tsv"
    bad_price_ean = ean_for(n + 1_000_000 + spec.index)
    bad_ean = ean_for(1)[:-1] + str((int(ean_for(1)[-1]) + 1) % 10)
    records = 0
    with feed.open("wb") as out, tsv.open("w", encoding="utf-8") as twin:
        if spec.format == "xml":
            out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<catalog supplier="bench">\n<products>\n')
        else:
            out.write("Indeks;EAN;Nazwa;Cena netto;Stan\r\n".encode("cp1250"))
        buffer: list[str] = []
        twin_buffer: list[str] = []
        for i in range(1, n + 1):
            if not spec.carries(i):
                continue
            code, ean, name, cents, stock = _offer(spec, i)
            price = f"{cents // 100}.{cents % 100:02d}"
            records += 1
            if spec.format == "xml":
                buffer.append(
                    f"  <product><code>{code}</code><ean>{ean}</ean><name>{_xml_escape(name)}</name>"
                    f"<price><net>{price}</net><currency>PLN</currency></price><stock>{stock}</stock></product>\n"
                )
            else:
                name = name + ", opakowanie zbiorcze"
                quoted = name.replace('"', '""')
                buffer.append(f'{code};{ean};"{quoted}";{price.replace(".", ",")};{stock}\r\n')
            twin_buffer.append(f"{code}\t{ean}\t{name}\t{price}\tPLN\t{stock}\n")
            if records == 10:  # broken records sit among good ones: parsers must skip, not stop
                if spec.format == "xml":
                    buffer.append(
                        f"  <product><code>{spec.prefix}-BAD-PRICE</code><ean>{bad_price_ean}</ean>"
                        "<name>Uszkodzony rekord</name><price><net>12,3x</net><currency>PLN</currency></price>"
                        "<stock>5</stock></product>\n"
                        f"  <product><code>{spec.prefix}-BAD-EAN</code><ean>{bad_ean}</ean>"
                        "<name>Uszkodzony rekord</name><price><net>19.99</net><currency>PLN</currency></price>"
                        "<stock>3</stock></product>\n"
                    )
                else:
                    buffer.append(f"{spec.prefix}-BAD-STOCK;{bad_price_ean};Błędny rekord;15,50;-4\r\n")
                    buffer.append(f"{spec.prefix}-NO-PRICE;{bad_ean[:-1]}0;Błędny rekord żółć;;12\r\n")
            if len(buffer) >= 20_000:
                out.write("".join(buffer).encode("utf-8" if spec.format == "xml" else "cp1250"))
                twin.write("".join(twin_buffer))
                buffer.clear()
                twin_buffer.clear()
        out.write("".join(buffer).encode("utf-8" if spec.format == "xml" else "cp1250"))
        twin.write("".join(twin_buffer))
        if spec.format == "xml":
            out.write(b"</products>\n</catalog>\n")
    return {
        "id": spec.id,
        "format": spec.format,
        "path": str(feed.resolve()),
        "tsv": str(tsv.resolve()),
        "records": records + 2,
        "bytes": feed.stat().st_size,
    }


def supplier_config(spec: SupplierSpec, path: str) -> dict[str, object]:
    """The supplier's configuration (as in ``include/config/suppliers.yaml``) with a file transport."""
    base: dict[str, object] = {
        "id": spec.id,
        "name": f"bench {spec.id}",
        "format": spec.format,
        "mode": "full",
        "currency": "PLN",
        "transport": {"type": "file", "path": path},
    }
    if spec.format == "xml":
        base["xml"] = {
            "record_tag": "product",
            "decimal_separator": ".",
            "fields": {
                "supplier_sku": "code",
                "gtin": "ean",
                "name": "name",
                "purchase_price": "price/net",
                "currency": "price/currency",
                "quantity": "stock",
            },
        }
    else:
        base["csv"] = {
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
        }
    return base


def apply_erp_changes(erp_dsn: str, rate: float, round_no: int = 1) -> int:
    """Raise the purchase price of every ``round(1/rate)``-th SKU by 5 %; return the rows changed."""
    if rate <= 0:
        return 0
    step = max(1, round(1 / rate))
    with connect(erp_dsn) as conn:
        cur = conn.execute(
            "UPDATE erp.products SET purchase_price = round(purchase_price * 1.05, 2) "
            "WHERE (substr(sku, 5)::int + %s) %% %s = 0",
            (round_no, step),
        )
        return cur.rowcount


def generate(erp_dsn: str, n: int, suppliers: int, out: Path) -> dict[str, object]:
    """Generate everything; return a manifest (also written to ``out/manifest.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_erp_rows(erp_dsn, n)
    erp_seconds = time.perf_counter() - started
    feeds = []
    for spec in supplier_specs(suppliers):
        feed = write_supplier_feed(spec, n, out / "feeds")
        feed["config"] = supplier_config(spec, str(feed["path"]))
        feeds.append(feed)
    manifest = {
        "n": n,
        "seed": SEED,
        "erp_seconds": round(erp_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
        "suppliers": feeds,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--suppliers", type=int, default=2)
    parser.add_argument("--erp-url", default="postgresql://postgres@127.0.0.1:5432/cs_bench_erp")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "work")
    args = parser.parse_args()
    print(json.dumps(generate(args.erp_url, args.n, args.suppliers, args.out), indent=2))


if __name__ == "__main__":
    main()
