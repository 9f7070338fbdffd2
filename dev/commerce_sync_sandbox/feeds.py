"""Two deterministic wholesaler feeds built from the demo catalog, with known bad records.

``acme.xml`` (UTF-8 XML)::

    <catalog supplier="acme" generated="2026-11-01T00:00:00Z"><products>
      <product><code>ACM-000001</code><ean>5900000000015</ean><name>…</name>
        <price><net>123.45</net><currency>PLN</currency></price><stock>17</stock></product>

It carries about 70 % of the catalog (supplier price = purchase price x 0.90..1.10, stock 0..500)
plus two records that validation must quarantine:

* ``ACM-BAD-PRICE``: net price ``12,3x`` (not a number);
* ``ACM-BAD-EAN``: an EAN-13 whose check digit is wrong.

``bravo.csv`` (cp1250, ``;``-separated, decimal comma, header ``Indeks;EAN;Nazwa;Cena netto;Stan``)
carries about 50 % of the catalog, partly overlapping with acme, with Polish names, plus:

* ``BRV-BAD-STOCK``: a negative stock;
* ``BRV-NO-PRICE``: an empty net price.

Nothing depends on the clock: the same ``(n, seed)`` gives byte-identical files, so an HTTP
server's ETag stays stable and a re-download is recognised as unchanged.
"""

from __future__ import annotations

import csv
import io
import os
import random
import tempfile
from decimal import Decimal
from pathlib import Path
from xml.sax.saxutils import escape

from commerce_sync.sources.gtin import check_digit
from commerce_sync_sandbox.catalog import EAN_PREFIX, SandboxProduct, products

GENERATED = "2026-11-01T00:00:00Z"
ACME_SHARE = 0.70
BRAVO_SHARE = 0.50
BAD_RECORDS = {
    "acme": ("ACM-BAD-PRICE", "ACM-BAD-EAN"),
    "bravo": ("BRV-BAD-STOCK", "BRV-NO-PRICE"),
}
_CENT = Decimal("0.01")
_BAD_POSITION = 10  # bad rows sit among good ones so parsers must skip them, not stop at them


def _number(product: SandboxProduct) -> str:
    return product.sku.removeprefix("SKU-")


def _wrong_check_digit(ean: str) -> str:
    good = check_digit(ean[:-1])
    return ean[:-1] + str((good + 1) % 10)


def _spare_ean(seed: int) -> str:
    # A valid EAN outside the catalog's numbering, for the record whose only fault is its price.
    data = f"{EAN_PREFIX}9{seed % 10**8:08d}"
    return data + str(check_digit(data))


def _supplier_price(rng: random.Random, product: SandboxProduct) -> Decimal:
    factor = Decimal(rng.randint(900, 1100)) / 1000
    return max(_CENT, (product.purchase_price * factor).quantize(_CENT))


def _with_bad(rows: list[str], bad: list[str]) -> list[str]:
    position = min(_BAD_POSITION, len(rows))
    return rows[:position] + bad + rows[position:]


def acme_xml(n: int = 300, seed: int = 42) -> bytes:
    """The acme feed as UTF-8 bytes."""
    rng = random.Random(f"acme:{seed}")
    catalog = products(n, seed)
    records: list[str] = []
    for product in catalog:
        if rng.random() >= ACME_SHARE:
            continue
        price = _supplier_price(rng, product)
        stock = rng.randint(0, 500)
        records.append(_acme_record(f"ACM-{_number(product)}", product.ean, product.name, f"{price}", stock))
    sample = catalog[0] if catalog else None
    bad = [
        _acme_record("ACM-BAD-PRICE", _spare_ean(seed), "Uszkodzony rekord: cena", "12,3x", 5),
        _acme_record(
            "ACM-BAD-EAN",
            _wrong_check_digit(sample.ean if sample else _spare_ean(seed + 1)),
            "Uszkodzony rekord: EAN",
            "19.99",
            3,
        ),
    ]
    body = "".join(_with_bad(records, bad))
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<catalog supplier="acme" generated="{GENERATED}">\n<products>\n{body}</products>\n</catalog>\n'
    )
    return text.encode("utf-8")


def _acme_record(code: str, ean: str, name: str, net: str, stock: int) -> str:
    return (
        f"  <product><code>{escape(code)}</code><ean>{escape(ean)}</ean><name>{escape(name)}</name>"
        f"<price><net>{escape(net)}</net><currency>PLN</currency></price>"
        f"<stock>{stock}</stock></product>\n"
    )


def bravo_csv(n: int = 300, seed: int = 42) -> bytes:
    """The bravo feed as cp1250 bytes (``;``, decimal comma, CRLF line ends)."""
    rng = random.Random(f"bravo:{seed}")
    rows: list[list[str]] = []
    for product in products(n, seed):
        if rng.random() >= BRAVO_SHARE:
            continue
        price = _supplier_price(rng, product)
        stock = rng.randint(0, 500)
        # Bravo names products its own way, so matching must go by EAN, not by name.
        name = f"{product.name}, opakowanie zbiorcze"
        rows.append([f"BRV-{_number(product)}", product.ean, name, f"{price}".replace(".", ","), str(stock)])
    bad = [
        ["BRV-BAD-STOCK", _spare_ean(seed + 2), "Błędny rekord: ujemny stan", "15,50", "-4"],
        ["BRV-NO-PRICE", _spare_ean(seed + 3), "Błędny rekord: brak ceny żółć", "", "12"],
    ]
    position = min(_BAD_POSITION, len(rows))
    rows = rows[:position] + bad + rows[position:]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(["Indeks", "EAN", "Nazwa", "Cena netto", "Stan"])
    writer.writerows(rows)
    return buffer.getvalue().encode("cp1250")


def _write_atomically(path: Path, data: bytes) -> None:
    # Unchanged content keeps its mtime, so Last-Modified (like the ETag) stays stable too.
    if path.exists() and path.read_bytes() == data:
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_feeds(directory: Path, n: int = 300, seed: int = 42) -> dict[str, Path]:
    """Write ``acme.xml`` and ``bravo.csv`` into ``directory`` (created if missing), atomically.

    Returns:
        ``{"acme": path, "bravo": path}``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"acme": directory / "acme.xml", "bravo": directory / "bravo.csv"}
    _write_atomically(paths["acme"], acme_xml(n, seed))
    _write_atomically(paths["bravo"], bravo_csv(n, seed))
    return paths
