"""Expectation suites as code, one per dataset, compiled to one set-based SQL pass.

Each suite declares its row expectations once: the Great Expectations expectation type it stands
for, the column, a SQL predicate that is true for a failing row, and a SQL expression for the
sentence an operator reads ("purchase_price '12,3x' is not a number"). :mod:`.gate` compiles a
suite into a single ``INSERT INTO hub.quarantine ... SELECT`` over the staged batch (so a million
rows are checked where they are, not pulled into pandas) and hands the counts to Great
Expectations, which renders the evidence as Data Docs (:mod:`.evidence`).

Why not GX's own SQL engine for the rows: its results carry only a partial list of failing
values; the keys and record numbers quarantine needs would take one extra query per expectation.
``bench/quality.py`` measures both.

Typed helper columns live in the suite's ``typed_select`` (the same normalisation the merge
uses), so validation and typing cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SUPPLIER_OFFER_SUITE = "supplier_offer"
ERP_PRODUCT_SUITE = "erp_product"
# Grouping spaces a supplier may put in numbers (space, no-break space, narrow no-break space).
# The SQL merge strips exactly the same set, so validation and typing cannot disagree.
NUMBER_SPACES = "[ \u00a0\u202f]"
NUMBER_SPACE_CHARS = " \u00a0\u202f"  # the same set, for translate()
PRICE_MAX = 9_999_999_999.9999  # numeric(14, 4)
QUANTITY_MAX = 2_147_483_647  # integer
CURRENCY_PATTERN = "^[A-Z]{3}$"
QUANTITY_PATTERN = "^[+-]?[0-9]+$"
NAME_MAX_LENGTH = 500
# ISO 4217 codes in use (2026). A currency outside this list is a typo or a made-up code.
ISO_4217 = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD
    CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF
    GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP
    LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB
    PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL
    THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW
    ZWG""".split()  # noqa: SIM905 (a list literal of 160 codes reads worse)
)


@dataclass(frozen=True)
class RowExpectation:
    """One row-level expectation of a suite.

    Attributes:
        expectation: The Great Expectations expectation type it implements (the name quarantine
            and Data Docs show), e.g. ``expect_column_values_to_be_between``.
        column: The delivered column it is about (``hub.quarantine.column_name``).
        failing: SQL boolean over the typed row ``r``: true when the row breaks the expectation.
        reason: SQL text expression over ``r`` for the operator's sentence (only evaluated for
            failing rows).
        kwargs: The expectation's arguments as GX would take them (shown in Data Docs).
    """

    expectation: str
    column: str
    failing: str
    reason: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.expectation}({self.column})"


@dataclass(frozen=True)
class Suite:
    """Row expectations over one staged dataset.

    Attributes:
        name: Suite name (also the quarantine ``dataset``).
        staging: The staging table, ``schema.table``.
        key: The column holding the record key (``hub.quarantine.record_key``).
        typed_select: ``SELECT ... FROM <staging> AS s ... WHERE s.transfer_id = %(transfer_id)s``
            yielding the raw columns, ``record_no``, ``source_line`` and the typed helpers the
            predicates use. May use query parameters of the caller (``%(price_pattern)s`` etc.).
        raw_columns: The delivered columns copied into ``hub.quarantine.raw``.
        expectations: The row expectations, in the order they are reported.
        streamed: (expectation, column) checked while the rows are read, before staging, because
            the value must be typed to be staged (e.g. an ERP price that is not a number); their
            failures are already in quarantine and are counted with the suite's.
    """

    name: str
    staging: str
    key: str
    typed_select: str
    raw_columns: tuple[str, ...]
    expectations: tuple[RowExpectation, ...]
    streamed: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ExpectationResult:
    """How one expectation fared on a batch."""

    expectation: str
    column: str
    unexpected_count: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.unexpected_count == 0


@dataclass(frozen=True)
class ValidationOutcome:
    """What a suite found in a batch (failing rows are in ``hub.quarantine``)."""

    suite: str
    rows_evaluated: int
    rows_quarantined: int
    results: tuple[ExpectationResult, ...]

    @property
    def expectations(self) -> int:
        return len(self.results)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.success)

    @property
    def passed(self) -> int:
        return self.expectations - self.failed

    def summary(self) -> dict[str, Any]:
        """Counts for the ledger's ``details.validation``."""
        return {
            "suite": self.suite,
            "expectations": self.expectations,
            "passed": self.passed,
            "failed": self.failed,
            "rows_evaluated": self.rows_evaluated,
            "rows_quarantined": self.rows_quarantined,
            "failed_expectations": {
                f"{r.expectation}({r.column})": r.unexpected_count for r in self.results if not r.success
            },
        }


# ---------------------------------------------------------------- shared SQL pieces
# Characters stripped from a GTIN before checking it (as sources.gtin does: whitespace and dashes).
GTIN_SEPARATORS = " \t\n\r\f\v\u00a0-"


def digits_only_sql(text: str) -> str:
    """SQL: ``text`` is non-empty and only ASCII digits (translate() is ~4x cheaper than a regex)."""
    return f"({text} <> '' AND translate({text}, '0123456789', '') = '')"


# A well-formed number with more significant digits than this is out of every column's range: it is
# typed as 'Infinity' (fails the range check, quarantined with its value) instead of being cast, as a
# number of 131,073 digits would overflow even PostgreSQL's unconstrained numeric and fail the batch.
SIGNIFICANT_DIGITS_MAX = 100


def bounded_numeric_sql(text: str, numeric: str) -> str:
    """SQL: ``numeric`` (the cast of well-formed ``text``), or 'Infinity' when ``text`` has too many digits."""
    return (
        f"CASE WHEN length(ltrim({text}, '+-0')) <= {SIGNIFICANT_DIGITS_MAX} THEN {numeric} "
        "ELSE 'Infinity'::numeric END"
    )


def integer_value_sql(text: str) -> str:
    """SQL: ``text`` as numeric when it is a whole number with at most one leading sign, else NULL."""
    unsigned = f"ltrim({text}, '+-')"
    return (
        f"CASE WHEN {digits_only_sql(unsigned)} AND length({text}) - length({unsigned}) <= 1 "
        f"THEN {bounded_numeric_sql(text, text + '::numeric')} END"
    )


def gtin_value_sql(digits: str) -> str:
    """SQL: the GTIN as a bigint when it has 8, 12, 13 or 14 digits and nothing else, else NULL."""
    return f"CASE WHEN {digits_only_sql(digits)} AND length({digits}) IN (8, 12, 13, 14) THEN {digits}::bigint END"


def gtin_check_digit_sql(value: str) -> str:
    """SQL for the GS1 check digit of a GTIN given as a bigint (its last digit is the check digit).

    Data digit k (k = 1 is the rightmost data digit) has weight 3 when k is odd, else 1, as in
    :mod:`sources.gtin`. Integer arithmetic: about 3x faster than 13 substr() calls.
    """
    terms = " + ".join(f"mod({value} / {10**k}, 10) * {3 if k % 2 else 1}" for k in range(1, 14))
    return f"mod(10 - mod({terms}, 10), 10)"


def gtin_failing_sql(raw: str, value: str) -> str:
    """True when a present GTIN is not valid: not digits, wrong length, all zeros, bad check digit.

    ``value`` is the bigint from :func:`gtin_value_sql` (NULL unless well formed).
    """
    # CASE, not OR: the check digit is only computed for well-formed codes.
    return (
        f"CASE WHEN {raw} IS NULL OR btrim({raw}) = '' THEN false "
        f"WHEN {value} IS NULL OR {value} = 0 THEN true "
        f"ELSE mod({value}, 10) <> {gtin_check_digit_sql(value)} END"
    )


def gtin_reason_sql(raw: str, digits: str, value: str) -> str:
    """The operator's sentence for a failing GTIN (same wording as :func:`sources.gtin.gtin_problem`)."""
    return (
        f"CASE WHEN NOT {digits_only_sql(digits)} THEN format('GTIN %%L contains characters other than digits', {raw}) "
        f"WHEN length({digits}) NOT IN (8, 12, 13, 14) THEN "
        f"format('GTIN %%L has %%s digits; a GTIN has 8, 12, 13 or 14', {raw}, length({digits})) "
        f"WHEN {value} = 0 THEN format('GTIN %%L is all zeros', {raw}) "
        f"ELSE format('GTIN %%L: check digit is %%s, expected %%s', {raw}, mod({value}, 10), "
        f"{gtin_check_digit_sql(value)}) END"
    )


def _duplicates_join(staging: str, key: str, partition: str = "") -> str:
    """LEFT JOIN marking rows whose key occurs more than once in the batch (``d.dup``)."""
    return (
        f"LEFT JOIN (SELECT {partition}{key} AS dup_key, true AS dup FROM {staging} "
        f"WHERE transfer_id = %(transfer_id)s AND {key} IS NOT NULL "
        f"GROUP BY {partition}{key} HAVING count(*) > 1) AS d ON d.dup_key = s.{key}"
    )


_CURRENCIES_SQL = "ARRAY[" + ", ".join(f"'{c}'" for c in sorted(ISO_4217)) + "]::text[]"


def _currency_expectations(column: str = "currency") -> tuple[RowExpectation, ...]:
    return (
        RowExpectation(
            "expect_column_values_to_be_in_set",
            column,
            f"r.{column} IS NULL OR NOT (r.{column} = ANY({_CURRENCIES_SQL}))",
            f"CASE WHEN r.{column} IS NULL THEN '{column} is missing' "
            f"ELSE format('{column} %%L is not an ISO 4217 currency code', r.{column}) END",
            {"value_set": "ISO 4217"},
        ),
    )


# ---------------------------------------------------------------- supplier offers
SUPPLIER_OFFER_COLUMNS = ("supplier_sku", "gtin", "name", "purchase_price", "currency", "quantity")


def price_pattern(decimal_separator: str) -> str:
    """POSIX regex a price must match once grouping spaces are removed (at most 4 decimals)."""
    escaped = "\\." if decimal_separator == "." else decimal_separator
    return "^[+-]?[0-9]+(" + escaped + "[0-9]{1,4})?$"


_PRICE_CAST = "replace(t.price_text, %(decimal_separator)s, '.')::numeric"

SUPPLIER_OFFERS = Suite(
    name=SUPPLIER_OFFER_SUITE,
    staging="staging.supplier_offer",
    key="supplier_sku",
    # Inner and outer OFFSET 0 keep PostgreSQL from inlining the typed columns into every predicate
    # that uses them (each would be recomputed); translate() strips characters far cheaper than a regex.
    typed_select=f"""
        SELECT t.*,
               CASE WHEN t.price_text ~ %(price_pattern)s
                    THEN {bounded_numeric_sql("t.price_text", _PRICE_CAST)}
                END AS price_value,
               {integer_value_sql("t.quantity_text")} AS quantity_value,
               {gtin_value_sql("t.gtin_digits")} AS gtin_value
          FROM (SELECT s.record_no, s.source_line, s.supplier_sku, s.gtin, s.name, s.purchase_price,
                       s.currency, s.quantity, s.price_expected, s.quantity_expected,
                       translate(s.purchase_price, '{NUMBER_SPACE_CHARS}', '') AS price_text,
                       translate(s.quantity, '{NUMBER_SPACE_CHARS}', '') AS quantity_text,
                       translate(s.gtin, '{GTIN_SEPARATORS}', '') AS gtin_digits,
                       coalesce(d.dup, false) AS duplicate_key
                  FROM staging.supplier_offer AS s
                  {_duplicates_join("staging.supplier_offer", "supplier_sku")}
                 WHERE s.transfer_id = %(transfer_id)s
                OFFSET 0) AS t
        OFFSET 0
    """,
    raw_columns=("record_no", "source_line", *SUPPLIER_OFFER_COLUMNS),
    expectations=(
        RowExpectation(
            "expect_column_values_to_not_be_null", "supplier_sku", "r.supplier_sku IS NULL", "'supplier_sku is missing'"
        ),
        RowExpectation(
            "expect_column_values_to_be_unique",
            "supplier_sku",
            "r.duplicate_key",
            "format('supplier_sku %%L appears more than once in this delivery', r.supplier_sku)",
        ),
        RowExpectation(
            "expect_column_values_to_match_regex",
            "purchase_price",
            # A feed that does not deliver prices (a stock feed) may leave a new offer's price unknown.
            "r.price_value IS NULL AND (r.purchase_price IS NOT NULL OR r.price_expected)",
            "CASE WHEN r.purchase_price IS NULL THEN 'purchase_price is missing' "
            "ELSE format('purchase_price %%L is not a number (expected digits with %%L as decimal separator "
            "and at most 4 decimals)', r.purchase_price, %(decimal_separator)s) END",
            {"regex": "price with the supplier's decimal separator"},
        ),
        RowExpectation(
            "expect_column_values_to_be_between",
            "purchase_price",
            f"r.price_value <= 0 OR r.price_value > {PRICE_MAX}",
            f"CASE WHEN r.price_value <= 0 THEN format('purchase_price %%L is not above 0', r.purchase_price) "
            f"ELSE format('purchase_price %%L is larger than {PRICE_MAX}', r.purchase_price) END",
            {"min_value": 0, "strict_min": True, "max_value": PRICE_MAX},
        ),
        RowExpectation(
            "expect_column_values_to_match_regex",
            "quantity",
            # BMEcat has no stock element and a price-only feed none at all: unknown stock is not sellable.
            "r.quantity_value IS NULL AND (r.quantity IS NOT NULL OR r.quantity_expected)",
            "CASE WHEN r.quantity IS NULL THEN 'quantity is missing' "
            "ELSE format('quantity %%L is not a whole number', r.quantity) END",
            {"regex": QUANTITY_PATTERN},
        ),
        RowExpectation(
            "expect_column_values_to_be_between",
            "quantity",
            f"r.quantity_value < 0 OR r.quantity_value > {QUANTITY_MAX}",
            f"CASE WHEN r.quantity_value < 0 THEN format('quantity %%L is negative', r.quantity) "
            f"ELSE format('quantity %%L is larger than {QUANTITY_MAX}', r.quantity) END",
            {"min_value": 0, "max_value": QUANTITY_MAX},
        ),
        RowExpectation(
            "expect_column_values_to_be_valid_gtin",
            "gtin",
            gtin_failing_sql("r.gtin", "r.gtin_value"),
            gtin_reason_sql("r.gtin", "r.gtin_digits", "r.gtin_value"),
            {"lengths": [8, 12, 13, 14], "check_digit": "GS1 mod 10"},
        ),
        # The same limit as the ERP's product names: a 100,000-character name is a broken feed, not a name.
        RowExpectation(
            "expect_column_value_lengths_to_be_between",
            "name",
            f"length(r.name) > {NAME_MAX_LENGTH}",
            f"format('name has %%s characters, at most {NAME_MAX_LENGTH} allowed', length(r.name))",
            {"max_value": NAME_MAX_LENGTH},
        ),
        *_currency_expectations(),
    ),
)


# ---------------------------------------------------------------- ERP products
ERP_PRODUCT_COLUMNS = (
    "sku",
    "gtin",
    "name",
    "purchase_price",
    "currency",
    "vat_rate",
    "stock",
    "reserved",
    "active",
)
NUMBER_PATTERN = "^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?$"
# Checked by sources.erp.validate_row while streaming: the values must parse to be staged, and the
# GTIN is normalised (padded to 14) on the way, so its check must come first.
ERP_STREAMED_CHECKS = (
    ("sku_not_null", "sku"),
    ("gtin_valid", "gtin"),
    ("purchase_price_numeric", "purchase_price"),
    ("vat_rate_numeric", "vat_rate"),
    ("stock_integer", "stock"),
    ("reserved_integer", "reserved"),
    ("active_boolean", "active"),
)

ERP_PRODUCTS = Suite(
    name=ERP_PRODUCT_SUITE,
    staging="staging.erp_product",
    key="sku",
    typed_select=f"""
        SELECT s.record_no, NULL::integer AS source_line, s.sku, s.gtin, s.name, s.purchase_price, s.currency,
               s.vat_rate, s.stock, s.reserved, s.active,
               CASE WHEN s.purchase_price ~ '{NUMBER_PATTERN}' THEN s.purchase_price::numeric END AS price_value,
               CASE WHEN s.vat_rate ~ '{NUMBER_PATTERN}' THEN s.vat_rate::numeric END AS vat_value,
               {integer_value_sql("s.stock")} AS stock_value,
               coalesce(d.dup, false) AS duplicate_key
          FROM staging.erp_product AS s
          {_duplicates_join("staging.erp_product", "sku")}
         WHERE s.transfer_id = %(transfer_id)s
        OFFSET 0
    """,
    raw_columns=("record_no", *ERP_PRODUCT_COLUMNS),
    expectations=(
        RowExpectation(
            "expect_column_values_to_be_unique",
            "sku",
            "r.duplicate_key",
            "format('SKU %%s appears more than once in this ERP batch', r.sku)",
        ),
        RowExpectation(
            "expect_column_value_lengths_to_be_between",
            "name",
            f"r.name IS NULL OR length(r.name) > {NAME_MAX_LENGTH}",
            f"CASE WHEN r.name IS NULL THEN format('SKU %%s: name is missing', r.sku) "
            f"ELSE format('SKU %%s: name has %%s characters, at most {NAME_MAX_LENGTH} allowed', r.sku, "
            "length(r.name)) END",
            {"min_value": 1, "max_value": NAME_MAX_LENGTH},
        ),
        RowExpectation(
            "expect_column_values_to_be_between",
            "purchase_price",
            f"r.price_value IS NULL OR r.price_value <= 0 OR r.price_value > {PRICE_MAX}",
            "CASE WHEN r.price_value IS NULL THEN format('SKU %%s: purchase price %%L is not a number', r.sku, "
            "r.purchase_price) ELSE format('SKU %%s: purchase price %%s must be > 0', r.sku, r.purchase_price) END",
            {"min_value": 0, "strict_min": True, "max_value": PRICE_MAX},
        ),
        RowExpectation(
            "expect_column_values_to_be_between",
            "vat_rate",
            "r.vat_value IS NULL OR r.vat_value < 0 OR r.vat_value >= 1",
            "format('SKU %%s: VAT rate %%L must be a fraction in [0, 1)', r.sku, r.vat_rate)",
            {"min_value": 0, "max_value": 1, "strict_max": True},
        ),
        RowExpectation(
            "expect_column_values_to_be_between",
            "stock",
            f"r.stock_value IS NULL OR r.stock_value < 0 OR r.stock_value > {QUANTITY_MAX}",
            "CASE WHEN r.stock_value IS NULL THEN format('SKU %%s: stock %%L is not an integer', r.sku, r.stock) "
            "ELSE format('SKU %%s: stock %%s is negative or too large', r.sku, r.stock) END",
            {"min_value": 0, "max_value": QUANTITY_MAX},
        ),
        *_currency_expectations(),
    ),
    streamed=ERP_STREAMED_CHECKS,
)

SUITES: dict[str, Suite] = {s.name: s for s in (SUPPLIER_OFFERS, ERP_PRODUCTS)}
