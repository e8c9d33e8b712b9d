"""The folder tree is the architecture (docs/architecture.md): every import between the
project's packages runs one way, down the data path. This reads every import of every module,
including the ones inside functions, so a shortcut taken in a hurry fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The data path, lowest first. A package may import packages of a lower rank only (and
# itself); packages of the same rank are siblings and must not import each other.
PRODUCT_RANK = {
    "core": 0,
    "registry": 1,
    "telemetry": 2,
    "geofence": 3,
    "permits": 4,
    "compliance": 5,
    "black_trucks": 6,
    "evidence": 6,
    "alerts": 6,
    "credit": 7,
    "web": 8,
}
# Above the product: they may use any product package, never the other way round.
ABOVE = {"simulators": 9, "bench": 10, "muck": 11}
RANK = PRODUCT_RANK | ABOVE


def project_imports(package: str, root: Path = ROOT) -> list[tuple[str, str]]:
    """(module path, imported project package) for every import in `package`."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in RANK and top != package:
                    found.append((str(path.relative_to(root)), top))
    return found


def existing(packages) -> list[str]:
    return [p for p in packages if (ROOT / p / "__init__.py").exists()]


def test_every_top_level_package_has_a_place_on_the_data_path():
    packages = {
        p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name != "tests"
    }
    assert packages <= set(RANK), f"add {sorted(packages - set(RANK))} to RANK and the docs"


@pytest.mark.parametrize("package", existing(RANK))
def test_imports_run_down_the_data_path(package):
    wrong = [
        f"{module} imports {target}"
        for module, target in project_imports(package)
        if RANK[target] >= RANK[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_core_imports_no_project_package():
    assert project_imports("core") == []


@pytest.mark.parametrize("package", existing(PRODUCT_RANK))
def test_the_product_never_imports_simulators_benchmarks_or_the_composition_root(package):
    wrong = [f"{m} imports {t}" for m, t in project_imports(package) if t in ABOVE]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path):
    """The checks above can fail: an upward import written into a package is reported."""
    (tmp_path / "geofence").mkdir()
    (tmp_path / "geofence" / "__init__.py").write_text("")
    (tmp_path / "geofence" / "shortcut.py").write_text(
        "def f():\n    from compliance.engine import ComplianceEngine\n"
    )
    assert project_imports("geofence", tmp_path) == [("geofence/shortcut.py", "compliance")]
