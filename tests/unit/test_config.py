"""Configuration validation: the shipped YAML loads; errors name the file, the key and the problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from commerce_sync.config import load_config
from commerce_sync.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "include" / "config"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(SHIPPED, target)
    return target


def _edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


def test_shipped_config_loads() -> None:
    config = load_config(SHIPPED)
    assert {s.id for s in config.suppliers if s.enabled} == {"acme", "bravo"}
    # Disabled examples validate too (a supplier with several feeds has a format per feed).
    assert {v.format for s in config.suppliers for v in s.feed_views()} == {"xml", "csv", "bmecat"}
    assert [v.feed_id for v in config.supplier("echo").feed_views()] == ["catalogue", "stock"]
    assert {c.id for c in config.channels} == {"allegro", "ebay", "amazon", "shop", "google", "meta", "ceneo"}
    for channel in config.channels:
        assert config.rule_for(channel).version >= 1


@pytest.mark.parametrize(
    ("file", "change", "expected"),
    [
        ("suppliers.yaml", lambda d: d["suppliers"][0].update(colour="red"), r"suppliers\[0\]\.colour: Extra inputs"),
        (
            "suppliers.yaml",
            lambda d: d["suppliers"][0]["xml"]["fields"].pop("purchase_price"),
            r"suppliers\[0\]\.xml\.fields: Value error, missing required field\(s\) \['purchase_price'\]",
        ),
        ("suppliers.yaml", lambda d: d["suppliers"][1].update(id="acme"), r"duplicate supplier id\(s\): \['acme'\]"),
        ("suppliers.yaml", lambda d: d["suppliers"][0].update(format="csv"), r"format is 'csv' but no 'csv' mapping"),
        ("channels.yaml", lambda d: d["channels"][0].pop("conn_id"), r"an allegro channel needs conn_id"),
        ("channels.yaml", lambda d: d["channels"][0].update(pricing_rule="nope"), r"rule 'nope' is not defined"),
        (
            "pricing.yaml",
            lambda d: d["rules"][0].update(min_margin_pct=50),
            r"min_margin_pct \(50\) is above margin_pct",
        ),
        ("pricing.yaml", lambda d: d["rules"][0].update(margin_pct="lots"), r"rules\[0\]\.margin_pct: Input should be"),
        ("erp.yaml", lambda d: d.pop("erp"), r"erp\.yaml: erp: Field required"),
    ],
)
def test_errors_name_file_key_and_problem(config_dir: Path, file: str, change, expected: str) -> None:
    _edit(config_dir / file, change)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(config_dir)
    assert file in str(info.value)


def test_yaml_syntax_error_names_the_file(config_dir: Path) -> None:
    (config_dir / "channels.yaml").write_text("channels: [unclosed\n")
    with pytest.raises(ConfigError, match=r"channels\.yaml: not valid YAML"):
        load_config(config_dir)


def test_missing_file(config_dir: Path) -> None:
    (config_dir / "pricing.yaml").unlink()
    with pytest.raises(ConfigError, match=r"pricing\.yaml: file not found"):
        load_config(config_dir)
