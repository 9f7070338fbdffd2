"""The import contracts (``[tool.importlinter]`` in pyproject.toml) hold, and each of them can fail.

``scripts/test.sh`` runs ``lint-imports`` next to ruff and mypy; this test runs it too, so a broken
contract also shows up in a plain pytest run. The mutation cases copy the importable trees to a
temporary directory, add one forbidden import and check that ``lint-imports`` names the contract it
breaks: a contract that can never fail (a module name misspelt, a DAG folder no longer seen) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
TREES = ("include", "dev", "dags", "plugins")


def lint_imports(root: Path, *python_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` on ``root``'s pyproject.toml with ``root`` as the working directory.

    ``stdout`` comes back with its whitespace collapsed: the report wraps long contract names.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in python_path)}
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result.stdout = " ".join(result.stdout.split())
    return result


def test_contracts_hold() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout
    assert "Layers of the product package KEPT" in result.stdout


@pytest.fixture(scope="module")
def copy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The importable trees and pyproject.toml, copied once; each case edits its own copy of it."""
    root = tmp_path_factory.mktemp("contracts")
    for tree in TREES:
        shutil.copytree(REPO / tree, root / tree, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


# (file to add or append to, the line, the contract that must break)
VIOLATIONS = [
    pytest.param(
        "include/commerce_sync/cli.py",
        "import commerce_sync_sandbox.erp",
        "The product package imports neither the sandbox nor the devtools BROKEN",
        id="product-imports-sandbox",
    ),
    pytest.param(
        "dags/hub_maintenance.py",
        "import commerce_sync_devtools.demo",
        "DAG files and the plugin import the product package, not the sandbox or the devtools BROKEN",
        id="dag-imports-devtools",
    ),
    pytest.param(
        "dev/commerce_sync_sandbox/feeds.py",
        "import commerce_sync_devtools.demo",
        "The devtools sit on the sandbox, the sandbox on the product package BROKEN",
        id="sandbox-imports-devtools",
    ),
    pytest.param(
        "include/commerce_sync/sources/erp.py",
        "import commerce_sync.channels.publish",
        "Layers of the product package BROKEN",
        id="sources-import-channels",
    ),
    pytest.param(
        "include/commerce_sync/audit/ledger.py",
        "import commerce_sync.quality.gate",
        "Layers of the product package BROKEN",
        id="audit-imports-quality",
    ),
    pytest.param(
        "include/commerce_sync/transport/http.py",
        "import commerce_sync.channels.outbox",
        "Layers of the product package BROKEN",
        id="transport-imports-channels",
    ),
    pytest.param(
        "include/commerce_sync/unplaced.py",
        "import commerce_sync.errors",
        "Layers of the product package BROKEN",
        id="new-module-without-a-layer",
    ),
    pytest.param(
        "include/commerce_sync/transport/staging.py",
        "import commerce_sync.transport.sftp",
        "No import cycles between sibling modules or packages anywhere in the product package BROKEN",
        id="cycle-inside-a-package",
    ),
]


@pytest.mark.parametrize(("path", "line", "broken"), VIOLATIONS)
def test_each_contract_catches_its_violation(
    copy_root: Path, tmp_path: Path, path: str, line: str, broken: str
) -> None:
    root = tmp_path / "tree"
    shutil.copytree(copy_root, root)
    target = root / path
    existing = target.read_text(encoding="utf-8") if target.exists() else ""
    target.write_text(existing + f"\n{line}  # injected by the test\n", encoding="utf-8")
    result = lint_imports(root, root / "include", root / "dev")
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout, result.stdout
