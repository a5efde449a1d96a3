"""The pure core imports no database, HTTP client or Prefect: checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Modules that must stay free of I/O libraries (add each new pure module here).
PURE_MODULES = [
    "tasks.compare",
    "tasks.compare_stripe",
    "tasks.value",
    "tasks.diagnose",
    "models.enums",
    "models.keys",
    "models.canonical",
]
FORBIDDEN = ["sqlalchemy", "sqlmodel", "httpx", "prefect"]

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def imported_by(module: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing `module`."""
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(json.loads(completed.stdout))


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_database_http_or_prefect(module: str) -> None:
    packages = imported_by(module)
    assert module.partition(".")[0] in packages  # the probe did import it
    assert packages.isdisjoint(FORBIDDEN), sorted(packages & set(FORBIDDEN))


def test_the_probe_sees_a_database_import() -> None:
    assert "sqlalchemy" in imported_by("models.tables")
