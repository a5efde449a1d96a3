"""The pages say what the code does: README.md and docs/*.md are held to the CLI, to
prefect.yaml, to the settings and to themselves (links and anchors). No Prefect server."""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml
from pydantic import AliasChoices

from integrations.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`]+)`")
#: "meter-recon" as a command: at the start, after a prompt, a path or VAR=value words.
COMMAND = re.compile(r"^(?:\$\s+)?(?:[A-Z_]+=\S+\s+)*(?:\S*/)?meter-recon\s+(.*)$")
DEPLOYMENT_RUN = re.compile(r"prefect deployment run ([\w.-]+)/([\w.-]+)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
SETTING = re.compile(r"\b(?:METER_RECON|STRIPE)_[A-Z0-9_]*[A-Z0-9]\b")
SHELL_ENDS = (">", "|", "&&", ";")


@dataclass(frozen=True)
class Shown:
    """A command as a page shows it."""

    page: str
    text: str


def _page_name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", text)


def _code_commands(page: Path) -> Iterator[Shown]:
    for language, body in FENCE.findall(page.read_text(encoding="utf-8")):
        if language == "text":  # output shown as text (an alert), not commands
            continue
        for line in body.splitlines():
            line = line.strip()
            if language == "console" and not line.startswith("$ "):
                continue  # a console block's output
            found = COMMAND.match(line)
            if found:
                yield Shown(_page_name(page), found.group(1))


def _inline_commands(page: Path) -> Iterator[Shown]:
    for span in INLINE.findall(_prose(page.read_text(encoding="utf-8"))):
        found = COMMAND.match(" ".join(span.split()))
        if found:
            yield Shown(_page_name(page), found.group(1))
        elif span.strip() in ("meter-recon", ".venv/bin/meter-recon"):
            continue


def shown_commands() -> list[Shown]:
    commands = {c for page in PAGES for c in (*_code_commands(page), *_inline_commands(page))}
    return sorted(commands, key=lambda c: (c.page, c.text))


def _words(arguments: str) -> list[str]:
    """The command's words, up to a redirection, a pipe or a note in parentheses."""
    try:
        tokens = shlex.split(arguments, comments=True)
    except ValueError:
        tokens = arguments.split()
    words = []
    for token in tokens:
        if token in SHELL_ENDS or token.startswith("("):
            break
        words.append(token)
    return words


@cache
def _help(chain: tuple[str, ...]) -> tuple[int, str]:
    """The exit code and text of `meter-recon CHAIN --help`, in this process."""
    import contextlib
    import io

    from meter_recon.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*chain, "--help"])
    return code, " ".join(re.sub(r"[│╭╮╰╯─]", " ", out.getvalue()).split())


def _chain(words: list[str]) -> tuple[str, ...]:
    from meter_recon.cli import app

    names = []
    for word in words:
        if word.startswith(("-", "[")):
            break
        names.append(word)
    chain: tuple[str, ...] = app.parse_commands(names)[0]
    return chain


def _subcommands(chain: tuple[str, ...]) -> set[str]:
    from meter_recon.cli import app

    node = app
    for name in chain:
        node = node[name]
    return {name for name in node if not name.startswith("-")}


COMMANDS = shown_commands()


def test_the_pages_show_commands() -> None:
    assert len(COMMANDS) > 20
    assert {c.page for c in COMMANDS} >= {"README.md", "docs/finance.md", "docs/operations.md"}


@pytest.mark.parametrize("shown", COMMANDS, ids=lambda c: f"{c.page}: {c.text[:60]}")
def test_every_command_shown_exists_with_its_flags(shown: Shown) -> None:
    chain = _chain(_words(shown.text))
    assert chain, f"{shown.page}: `meter-recon {shown.text}` names no meter-recon command"
    assert not _subcommands(chain), f"{shown.page}: `{' '.join(chain)}` needs a subcommand"
    code, help_text = _help(chain)
    assert code == 0
    for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", shown.text)):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), (
            f"{shown.page}: `meter-recon {' '.join(chain)}` has no {flag}"
        )


def test_a_command_that_does_not_exist_is_caught() -> None:
    assert not _chain(_words("reconcile --start 2026-10-01"))
    assert _subcommands(_chain(_words("pairs frobnicate")))
    assert "--frobnicate" not in _help(("report",))[1]


def _flow_name(entrypoint: str) -> str:
    """The name a `@flow` decorator gives the function an entrypoint names."""
    path, function = entrypoint.split(":")
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "flow":
                    for keyword in decorator.keywords:
                        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                            return str(keyword.value.value)
                    return function.replace("_", "-")
    raise AssertionError(f"{entrypoint} is not a flow")


def deployments() -> set[str]:
    """Every deployment of prefect.yaml as Prefect addresses it: FLOW_NAME/DEPLOYMENT_NAME."""
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return {f"{_flow_name(d['entrypoint'])}/{d['name']}" for d in project["deployments"]}


def test_the_deployments_are_addressed_by_flow_name() -> None:
    assert "triage-discrepancies/triage" in deployments()
    assert "meter-recon/nightly" in deployments()


@pytest.mark.parametrize("page", [*PAGES, ROOT / "prefect.yaml"], ids=_page_name)
def test_every_deployment_run_names_a_deployment_of_prefect_yaml(page: Path) -> None:
    named = {f"{f}/{d}" for f, d in DEPLOYMENT_RUN.findall(page.read_text(encoding="utf-8"))}
    assert named <= deployments(), f"not in prefect.yaml: {sorted(named - deployments())}"


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for line in _prose(page.read_text(encoding="utf-8")).splitlines():
        if line.startswith("#"):
            base = anchor(line.lstrip("#"))
            name, n = base, 0
            while name in found:
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def test_anchors_are_githubs() -> None:
    assert anchor("Triage from Prefect's UI: the `triage` deployment") == (
        "triage-from-prefects-ui-the-triage-deployment"
    )


@pytest.mark.parametrize("page", PAGES, ids=_page_name)
def test_every_relative_link_points_at_a_file_and_a_heading(page: Path) -> None:
    prose = _prose(page.read_text(encoding="utf-8"))
    for link in (a or b for a, b in LINK.findall(prose)):
        if re.match(r"[a-z]+:", link):
            continue  # https:, mailto:
        path, _, fragment = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.is_file(), f"{_page_name(page)}: {link} points at no file"
        if fragment:
            assert fragment in anchors(target), f"{_page_name(page)}: {link} has no such heading"


def setting_names() -> set[str]:
    """The environment variables Settings reads."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(a) for a in alias.choices if str(a).isupper()}
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def other_known_names() -> set[str]:
    """Variables read elsewhere: the worker's checkout (prefect.yaml), the tests' PostgreSQL."""
    texts = [ROOT / "prefect.yaml", ROOT / "tests" / "fixtures" / "db.py"]
    return {n for p in texts for n in SETTING.findall(p.read_text(encoding="utf-8"))}


@pytest.mark.parametrize("page", PAGES, ids=_page_name)
def test_every_setting_named_is_one_meter_recon_reads(page: Path) -> None:
    named = set(SETTING.findall(page.read_text(encoding="utf-8")))
    unknown = named - setting_names() - other_known_names()
    assert not unknown, f"{_page_name(page)} names settings that do not exist: {sorted(unknown)}"


def test_every_setting_is_in_the_operations_settings_table() -> None:
    page = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    table = page.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    missing = {n for n in setting_names() if f"| `{n}` |" not in table}
    assert not missing, f"docs/operations.md's Settings table lacks {sorted(missing)}"


@pytest.mark.parametrize("page", PAGES, ids=_page_name)
def test_no_page_tells_how_the_project_was_developed(page: Path) -> None:
    text = page.read_text(encoding="utf-8").lower()
    for phrase in ("this session", "session's", "issue #", "i15-"):
        assert phrase not in text, f"{_page_name(page)} says {phrase!r}"
