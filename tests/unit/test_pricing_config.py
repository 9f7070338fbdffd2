"""Pricing configuration: overrides, exchange rates, channel guards validate with clear errors."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from commerce_sync.config import load_config
from commerce_sync.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "include" / "config"


def test_shipped_pricing_config_has_overrides_rates_and_guards() -> None:
    config = load_config(SHIPPED)
    assert {o.level for o in config.rule_overrides} <= {"sku", "brand", "category"}
    assert all(o.rule in config.rules for o in config.rule_overrides)
    assert config.exchange_rates.rates
    allegro = config.channel("allegro")
    assert allegro.breakers is not None and allegro.change_cap is not None


@pytest.mark.parametrize(
    ("file", "change", "expected"),
    [
        (
            "pricing.yaml",
            lambda d: d.setdefault("overrides", []).append(
                {"channel": "allegro", "level": "sku", "match": "X", "rule": "nope"}
            ),
            r"overrides\[\d+\]: rule 'nope' is not defined",
        ),
        (
            "pricing.yaml",
            lambda d: d.setdefault("overrides", []).append(
                {"channel": "ghost", "level": "brand", "match": "X", "rule": "google-default"}
            ),
            r"overrides\[\d+\]\.channel: channel 'ghost' is not defined in channels\.yaml",
        ),
        (
            "pricing.yaml",
            lambda d: d.setdefault("overrides", []).append(
                {"channel": "allegro", "level": "colour", "match": "X", "rule": "google-default"}
            ),
            r"overrides\[\d+\]\.level: Input should be 'sku', 'brand' or 'category'",
        ),
        ("pricing.yaml", lambda d: d["rules"][0].update(rounding="0.10"), r"rules\[0\]\.rounding: Input should be"),
        (
            "pricing.yaml",
            lambda d: d["rules"][0].update(min_price=50, max_price=10),
            r"min_price \(50\) is above max_price \(10\)",
        ),
        (
            "pricing.yaml",
            lambda d: d.setdefault("exchange_rates", {}).update(
                rates=[{"currency": "EUR", "quote": "PLN", "rate": 0, "valid_on": "2026-01-01"}]
            ),
            r"exchange_rates\.rates\[0\]\.rate: Input should be greater than 0",
        ),
        ("channels.yaml", lambda d: d["channels"][0].update(stock_buffer_pct=-1), r"stock_buffer_pct: Input should be"),
        (
            "channels.yaml",
            lambda d: d["channels"][0].update(change_cap={"max_count": 3}),
            r"change_cap\.move_pct: Field required",
        ),
    ],
)
def test_invalid_pricing_config_is_named(
    tmp_path: Path, file: str, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    target = tmp_path / "config"
    shutil.copytree(SHIPPED, target)
    data = yaml.safe_load((target / file).read_text())
    change(data)
    (target / file).write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ConfigError, match=expected):
        load_config(target)


def test_outbox_kinds_come_from_the_channel_registry() -> None:
    from commerce_sync import registry

    kinds = {spec.name for spec in registry.kinds() if spec.uses_outbox}
    assert kinds == {spec.name for spec in registry.kinds("marketplace")} >= {"allegro", "ebay", "amazon"}
    assert not any(spec.uses_outbox for spec in registry.kinds("feed"))
