"""The house reads bottom to top: a top-level folder imports only the floors below it.

The table is docs/architecture.md's "Layers" table, read from the page itself, so the
page and the code cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"

#: floor -> the top-level packages on it (what the code must be)
FLOORS = {
    "models": 1,
    "integrations": 2,
    "simulator": 2,
    "tasks": 3,
    "flows": 4,
    "meter_recon": 5,
}
#: The simulator stands alone: it may import nothing of ours but the currency facts.
SIMULATOR_MAY_IMPORT = frozenset({"models.money"})


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def _allowed(importer: str, imported: str) -> bool:
    top = imported.split(".")[0]
    if top not in FLOORS or top == importer:
        return True
    if importer == "simulator":
        return any(imported == m or imported.startswith(m + ".") for m in SIMULATOR_MAY_IMPORT)
    return FLOORS[top] < FLOORS[importer]


def product_modules() -> list[Path]:
    return sorted(p for package in FLOORS for p in (ROOT / package).rglob("*.py"))


def test_every_product_module_imports_only_the_floors_below_it() -> None:
    slips = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in product_modules()
        for line, name in _imports(path)
        if not _allowed(path.relative_to(ROOT).parts[0], name)
    ]
    assert slips == []


def test_every_top_level_package_is_on_a_floor() -> None:
    packages = {
        p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in {"tests", "bench"}
    }
    assert packages == set(FLOORS)


def _documented_floors() -> dict[str, int]:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    floors: dict[str, int] = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*(\d)\s*\|\s*`(\w+)/`", line)
        if match:
            floors[match.group(2)] = int(match.group(1))
    return floors


def test_the_architecture_page_shows_the_same_table() -> None:
    assert _documented_floors() == FLOORS


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("tasks", "models.tables", True),
        ("tasks", "integrations.settings", True),
        ("tasks", "flows.fanout", False),
        ("models", "integrations.settings", False),
        ("integrations", "models.money", True),
        ("simulator", "models.money", True),
        ("simulator", "models.tables", False),
        ("flows", "meter_recon.cli", False),
        ("meter_recon", "flows.reconcile", True),
        ("integrations", "simulator", False),
    ],
)
def test_the_rule_reads_as_the_table_says(importer: str, imported: str, allowed: bool) -> None:
    assert _allowed(importer, imported) is allowed
