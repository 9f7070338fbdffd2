"""Exchange rates for pricing: loaded from ``pricing.yaml`` and/or a CSV into ``hub.exchange_rate``.

A rate says 1 ``currency`` = ``rate`` ``quote`` from ``valid_on``; pricing converts costs into the
channel's currency with the newest rate whose ``valid_on`` is not in the future. Only direct pairs
are used (no inverse or cross rates): a channel in EUR with costs in PLN needs a PLN -> EUR rate.

The CSV has a header ``currency,quote,rate,valid_on`` (``;`` as delimiter is accepted too, then the
rate may use a decimal comma, as NBP tables exported from a spreadsheet do).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

import psycopg

from commerce_sync.audit import ledger
from commerce_sync.config import ExchangeRates
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError, DataError
from commerce_sync.pricing.sqlfiles import sql_file

CSV_COLUMNS = ("currency", "quote", "rate", "valid_on")


@dataclass(frozen=True)
class Rate:
    """One exchange rate as stored in the hub."""

    currency: str
    quote: str
    valid_on: date
    rate: Decimal
    source: str


def read_rates_csv(path: Path, source: str) -> list[Rate]:
    """Parse a rates CSV; an error names the file, the line and the problem."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: exchange-rate CSV not found (pricing.yaml exchange_rates.csv)") from exc
    delimiter = ";" if ";" in text.partition("\n")[0] else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{path}: header lacks {missing}; expected {','.join(CSV_COLUMNS)}")
    rates = []
    for line, row in enumerate(reader, start=2):
        try:
            value = Decimal(row["rate"].strip().replace(",", ".") if delimiter == ";" else row["rate"].strip())
            valid_on = date.fromisoformat(row["valid_on"].strip())
        except (InvalidOperation, ValueError, AttributeError) as exc:
            raise DataError(
                f"{path}:{line}: rate {row.get('rate')!r} / valid_on {row.get('valid_on')!r}: {exc}"
            ) from exc
        currency, quote = row["currency"].strip().upper(), row["quote"].strip().upper()
        if len(currency) != 3 or len(quote) != 3 or currency == quote or value <= 0:
            raise DataError(f"{path}:{line}: {currency}->{quote} = {value} is not a usable exchange rate")
        rates.append(Rate(currency, quote, valid_on, value, source))
    return rates


def configured_rates(settings: ExchangeRates, data_dir: Path) -> list[Rate]:
    """The rates listed in pricing.yaml plus those of its CSV (CSV rows win on the same key)."""
    rates = {
        (r.currency, r.quote, r.valid_on): Rate(r.currency, r.quote, r.valid_on, r.rate, settings.source)
        for r in settings.rates
    }
    if settings.csv:
        path = Path(settings.csv)
        path = path if path.is_absolute() else data_dir / path
        rates.update({(r.currency, r.quote, r.valid_on): r for r in read_rates_csv(path, settings.source)})
    return list(rates.values())


@dataclass(frozen=True)
class RatesLoaded:
    """What :func:`load_rates` did: how many rates changed, and its ledger transfer (None: no rates configured)."""

    changed: int
    transfer_id: str | None


def load_rates(dsn: str, rates: list[Rate], run: ledger.RunContext) -> RatesLoaded:
    """Upsert ``rates`` (idempotent: unchanged rates are not touched) and record the transfer.

    With no rates configured there is nothing to transfer and no ledger row is written.
    """
    if not rates:
        return RatesLoaded(0, None)
    transfer = ledger.Transfer(source="config:exchange_rates", target="hub", dataset="exchange_rate", run=run)
    with ledger.recording(dsn, transfer), connect(dsn) as conn:
        changed = 0
        for r in rates:
            params = {**r.__dict__, "transfer_id": str(transfer.transfer_id)}
            changed += conn.execute(sql_file("upsert_exchange_rate"), params).rowcount
        transfer.rows_read = len(rates)
        transfer.rows_written = transfer.rows_changed = changed
        ledger.append(conn, transfer, "success")
    return RatesLoaded(changed, str(transfer.transfer_id))


def effective_rates(conn: psycopg.Connection, quote: str) -> dict[str, Decimal]:
    """Currency -> rate into ``quote``: the newest rate valid today (``quote`` itself is 1)."""
    rows = conn.execute(sql_file("effective_rates"), {"quote": quote}).fetchall()
    rates = {str(c).strip(): Decimal(r) for c, r in rows}
    rates[quote] = Decimal(1)
    return rates
