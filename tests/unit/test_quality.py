"""Suites as code and quality.yaml, without a database (the SQL itself runs in
tests/integration/test_quality_gate.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from commerce_sync.config import QualityFile, load_quality
from commerce_sync.errors import ConfigError
from commerce_sync.quality.evidence import site_relative_dir, sqlalchemy_url
from commerce_sync.quality.gate import compile_row_checks
from commerce_sync.quality.suites import SUITES, ExpectationResult, ValidationOutcome


@pytest.mark.parametrize("suite", list(SUITES.values()), ids=list(SUITES))
def test_each_suite_compiles_to_one_statement_naming_every_expectation(suite: object) -> None:
    statement = compile_row_checks(suite)  # type: ignore[arg-type]
    assert statement.count("INSERT INTO hub.quarantine") == 1
    for expectation in suite.expectations:  # type: ignore[attr-defined]
        assert f"'{expectation.expectation}', '{expectation.column}'" in statement
    assert "%(transfer_id)s" in statement


def test_outcome_summary_counts() -> None:
    outcome = ValidationOutcome(
        suite="supplier_offer",
        rows_evaluated=10,
        rows_quarantined=2,
        results=(
            ExpectationResult("expect_column_values_to_be_unique", "supplier_sku", 0),
            ExpectationResult("expect_column_values_to_be_between", "quantity", 3),
        ),
    )
    assert outcome.summary() == {
        "suite": "supplier_offer",
        "expectations": 2,
        "passed": 1,
        "failed": 1,
        "rows_evaluated": 10,
        "rows_quarantined": 2,
        "failed_expectations": {"expect_column_values_to_be_between(quantity)": 3},
    }


def test_quality_yaml_is_optional_and_per_source_overrides_apply(tmp_path: Path) -> None:
    assert load_quality(tmp_path) == QualityFile()
    (tmp_path / "quality.yaml").write_text(
        "version: 1\n"
        "datasets:\n"
        "  supplier_offer:\n"
        "    max_row_drop_percent: 40\n"
        "    sources:\n"
        "      'supplier:bravo': {max_row_drop_percent: null}\n",
        encoding="utf-8",
    )
    quality = load_quality(tmp_path)
    assert quality.breakers("supplier_offer", "supplier:acme").max_row_drop_percent == 40
    assert quality.breakers("supplier_offer", "supplier:bravo").max_row_drop_percent is None
    assert quality.breakers("erp_product", "erp").max_row_drop_percent == 50  # default


def test_repository_quality_yaml_loads() -> None:
    quality = load_quality()
    assert quality.breakers("supplier_offer", "supplier:acme").max_rejected_percent == 20


def test_quality_yaml_errors_name_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "quality.yaml").write_text(
        "version: 1\ndatasets:\n  supplier_offer:\n    max_rejected_percent: 150\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError) as err:
        load_quality(tmp_path)
    assert "quality.yaml: datasets.supplier_offer.max_rejected_percent" in str(err.value)


def test_evidence_paths_are_safe() -> None:
    assert site_relative_dir("supplier:acme/../x", "0d9a4c58-3e8e-4c3c-9a43-3f1f5a8a0a11") == (
        "supplier_acme_x/0d9a4c58-3e8e-4c3c-9a43-3f1f5a8a0a11"
    )
    with pytest.raises(ValueError, match="badly formed"):
        site_relative_dir("erp", "../../etc")
    assert sqlalchemy_url("postgresql://u@h:5432/db") == "postgresql+psycopg://u@h:5432/db"
