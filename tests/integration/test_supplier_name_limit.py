"""Supplier offer names are limited like the ERP's (500 characters): longer ones are quarantined."""

from __future__ import annotations

import psycopg
import pytest

from commerce_sync.quality.suites import NAME_MAX_LENGTH
from tests.integration.test_quality_gate import _check_offers, _offers

pytestmark = pytest.mark.integration


def test_a_name_longer_than_the_erp_limit_is_quarantined_with_its_length(hub_dsn: str) -> None:
    rows = _offers(4, {2: {"name": "x" * 100_000}, 3: {"name": "y" * NAME_MAX_LENGTH}, 4: {"name": None}})
    with psycopg.connect(hub_dsn) as conn:
        outcome, quarantined = _check_offers(conn, rows)
    assert [(q["record_no"], q["expectation"], q["column_name"]) for q in quarantined] == [
        (2, "expect_column_value_lengths_to_be_between", "name")
    ]
    assert quarantined[0]["reason"] == "name has 100000 characters, at most 500 allowed"
    assert quarantined[0]["record_key"] == "S-2"
    assert outcome.rows_quarantined == 1, "500 characters pass, and a missing name is not this check's business"
