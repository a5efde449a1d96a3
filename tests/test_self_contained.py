"""The repository stands alone: no file points to a design page or a reference folder that is
not in it, nor to an absolute path outside it. Readers have the README and the pages of docs/
(docs/architecture.md for contributors); reference data the tests need is copied into
tests/data/."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: A design page outside the repository, the shared reference folder, this machine's paths.
OUTSIDE = re.compile("|".join(("DES" + "IGN", "shared" + "/", "/" + "work" + "/")))
#: References written before the repository stood alone, per file: fix them, then drop the
#: entry. A file may not gain one, and no other file may have any.
NOT_YET_FIXED: dict[str, int] = {}


def _repository_files() -> list[Path]:
    """The files git tracks (and would track); a plain walk where there is no git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        return [ROOT / name for name in listed if (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skipped = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skipped & set(p.parts)]


def _references() -> Counter[str]:
    found: Counter[str] = Counter()
    for path in _repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary: no references to read
        for line in text.splitlines():
            if OUTSIDE.search(line):
                found[path.relative_to(ROOT).as_posix()] += 1
    return found


def test_no_file_refers_outside_the_repository() -> None:
    found = _references()
    beyond = {name: count for name, count in found.items() if count > NOT_YET_FIXED.get(name, 0)}
    assert beyond == {}, "refer to docs/architecture.md, the README or tests/data/ instead"


def test_the_readme_and_every_docs_page_are_checked() -> None:
    scanned = {path.relative_to(ROOT).as_posix() for path in _repository_files()}
    pages = {path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").glob("*.md")}
    assert len(pages) >= 6, "the docs pages by reader are in docs/"
    assert {"README.md", *pages} <= scanned


def test_the_architecture_page_is_in_the_repository() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for module in ("models/enums.py", "tasks/value.py", "tasks/diagnose.py", "UserError"):
        assert module in page
