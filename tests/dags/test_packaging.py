"""What ships: the product wheel holds the product package, its migrations and package data, and no
sandbox or devtools; pyproject.toml declares every third-party distribution the package imports.

The wheel is built from a copy of pyproject.toml, README.md and include/ (so the build leaves nothing
in the working tree) with the venv's pinned setuptools and no build isolation: no network, about 1 s.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "include" / "commerce_sync"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
DEV_PACKAGES = ("commerce_sync_sandbox", "commerce_sync_devtools")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(lines: list[str]) -> set[str]:
    """Distribution names of requirement strings (``name[extra]>=1  # comment`` -> ``name``)."""
    names = set()
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#", 1)[0])
        if match:
            names.add(_normalise(match.group(1)))
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    source = tmp_path_factory.mktemp("source")
    shutil.copy2(REPO / "pyproject.toml", source)
    shutil.copy2(REPO / "README.md", source)
    shutil.copytree(REPO / "include", source / "include", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    uv = Path(sys.executable).with_name("uv")
    result = subprocess.run(
        [str(uv), "build", "--wheel", "--no-build-isolation", "--offline", "-p", sys.executable, "-o", str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("commerce_sync-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


@pytest.mark.timeout(60)
def test_wheel_holds_the_product_and_its_migrations_and_no_sandbox(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    modules = {p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert "commerce_sync/cli.py" in modules and "commerce_sync/transport/sftp.py" in modules
    missing = sorted(modules - names)
    assert not missing, f"product modules missing from the wheel: {missing}"
    migrations = {p.relative_to(PACKAGE.parent).as_posix() for p in (PACKAGE / "hub" / "migrations").glob("*.sql")}
    assert len(migrations) >= 10
    assert migrations <= names, f"migrations missing from the wheel: {sorted(migrations - names)}"
    data = {
        path.relative_to(PACKAGE.parent).as_posix()
        for pattern in PYPROJECT["tool"]["setuptools"]["package-data"]["commerce_sync"]
        for path in PACKAGE.glob(pattern)
    }
    assert data - migrations, "expected package data besides the migrations (SQL, templates, CSS)"
    assert data <= names, f"package data missing from the wheel: {sorted(data - names)}"

    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"commerce_sync", "commerce_sync-0.1.0.dist-info"}, tops
    dev_files = sorted(
        name
        for name in names
        if re.search(r"(^|/)(commerce_sync_sandbox|commerce_sync_devtools|sandbox|devtools)(/|\.py$)", name)
    )
    assert not dev_files, f"the wheel ships sandbox or devtools modules: {dev_files}"


@pytest.mark.timeout(60)
def test_wheel_metadata_declares_the_cli_and_the_dependencies(wheel: zipfile.ZipFile) -> None:
    entry_points = wheel.read("commerce_sync-0.1.0.dist-info/entry_points.txt").decode()
    assert "commerce-sync = commerce_sync.cli:main" in entry_points
    assert "commerce-sync-dev" not in entry_points and "devtools" not in entry_points
    metadata = wheel.read("commerce_sync-0.1.0.dist-info/METADATA").decode()
    required = _requirement_names(
        [line.removeprefix("Requires-Dist:") for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    )
    assert {"requests", "paramiko", "psycopg", "lxml", "apache-airflow"} <= required, required


def test_package_discovery_and_data_name_only_what_exists() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    patterns = setuptools["packages"]["find"]["include"]
    assert all(not p.endswith("*") or p.endswith(".*") for p in patterns), (
        f"a bare prefix glob also matches {DEV_PACKAGES}: {patterns}"
    )
    for package, globs in setuptools["package-data"].items():
        root = REPO / "include" / package.replace(".", "/")
        for pattern in globs:
            assert list(root.glob(pattern)), f"package data {package}: {pattern} matches no file"


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> files of include/commerce_sync importing it (stdlib and the package left out)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".", 1)[0]
                if top not in sys.stdlib_module_names and top not in {"commerce_sync", "__future__"}:
                    found.setdefault(top, set()).add(path.relative_to(REPO).as_posix())
    return found


def test_every_third_party_import_is_a_declared_dependency() -> None:
    declared = _requirement_names(PYPROJECT["project"]["dependencies"])
    in_requirements = _requirement_names((REPO / "requirements.in").read_text(encoding="utf-8").splitlines())
    assert declared <= in_requirements, (
        f"in pyproject.toml but not requirements.in: {sorted(declared - in_requirements)}"
    )
    providers = importlib.metadata.packages_distributions()
    imports = _third_party_imports()
    assert {"requests", "paramiko", "lxml"} <= set(imports)
    undeclared = {}
    for module, files in sorted(imports.items()):
        # ``airflow`` is a namespace shared by airflow-core, the task SDK and the providers: apache-airflow.
        candidates = {"apache-airflow"} if module == "airflow" else {_normalise(d) for d in providers.get(module, [])}
        assert candidates, f"{module} (imported by {sorted(files)}) is not installed"
        if not candidates & declared:
            undeclared[module] = sorted(candidates)
    assert not undeclared, f"imported by include/commerce_sync but not in pyproject.toml dependencies: {undeclared}"
