"""Every runtime dependency in pyproject.toml is used: a dependency no module needs is one
more thing to install, pin and audit."""

from __future__ import annotations

import ast
import re
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "integrations", "simulator", "tasks", "flows", "meter_recon")
#: The module a distribution is imported as, where the names differ.
IMPORT_NAME = {"prefect-dask": "prefect_dask", "pydantic-settings": "pydantic_settings"}
#: Dependencies used without an import of ours, and where.
USED_WITHOUT_IMPORT = {
    "psycopg": "models/engine.py routes postgresql:// URLs to SQLAlchemy's postgresql+psycopg",
}


def _runtime_dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0] for spec in project["dependencies"]]


@cache
def _imported_top_level_names() -> frozenset[str]:
    names: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    return frozenset(names)


@pytest.mark.parametrize("dependency", _runtime_dependencies())
def test_every_runtime_dependency_is_imported_or_documented_as_used(dependency: str) -> None:
    if dependency in USED_WITHOUT_IMPORT:
        needed_by = (ROOT / USED_WITHOUT_IMPORT[dependency].split()[0]).read_text(encoding="utf-8")
        assert dependency in needed_by
        return
    assert IMPORT_NAME.get(dependency, dependency) in _imported_top_level_names()


def test_the_exceptions_are_still_dependencies() -> None:
    dependencies = set(_runtime_dependencies())
    assert set(USED_WITHOUT_IMPORT) <= dependencies
    assert set(IMPORT_NAME) <= dependencies
