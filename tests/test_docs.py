"""Every ```python block of README.md and docs/*.md runs here, so that no example can rot.

How the blocks are collected and run: one test per page (README.md, then docs/*.md in
name order). The page's ```python blocks run in the order they appear, with `exec`, in
one fresh namespace per page, so a later block may use the names an earlier block of the
same page made, as a reader going down the page would. The working directory is a fresh
temporary directory for each page, so blocks that write files (runs, checkpoints, text)
write there. A failure names the page and the line where the failing block starts.

Other fences are never run: ```bash and ```console hold shell commands, ```text holds
output. Every fence must name one of these languages (a bare ``` or a ```py would let a
block slip out of the run unnoticed), and that is checked too.

A block that needs an optional package names it on the line just above its fence:

    <!-- docs-test: requires torch safetensors -->

and is skipped, with the reason printed, where one of them is missing; the page's other
blocks still run (so no later block may rely on a name that a block like that defines).

The pages' structure is checked as well: the README's length, its install and test
commands against .ci/run, relative links that resolve, and no lab-notebook phrases
("the previous version", ...): a figure in the docs is the current one, with its machine.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
LANGUAGES = {"python", "bash", "console", "text"}
FENCE = re.compile(r"^(\s*)```(.*)$")
REQUIRES = re.compile(r"^\s*<!--\s*docs-test:\s*requires\s+([\w\s.-]+?)\s*-->\s*$")


def fenced_blocks(path):
    """[(language, first line number of the code, code, required modules)] of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2).strip()
        req = REQUIRES.match(lines[i - 1]) if i else None
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        if i == len(lines):
            raise AssertionError(f"{path.name}:{start}: a code fence is never closed")
        i += 1  # the closing fence
        blocks.append((lang, start + 1, "\n".join(body) + "\n", req.group(1).split() if req else []))
    return blocks


def _page_id(path):
    return os.path.relpath(path, ROOT)


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_fences_name_their_language(page):
    for lang, line, _, _ in fenced_blocks(page):
        assert lang in LANGUAGES, (f"{_page_id(page)}:{line}: a fence says {lang!r}; use one of "
                                   f"{sorted(LANGUAGES)} (python blocks are run by tests/test_docs.py)")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_python_blocks_run(page, tmp_path, monkeypatch, capsys):
    blocks = [b for b in fenced_blocks(page) if b[0] == "python"]
    if not blocks:
        return  # a page of prose, tables and shell commands
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    skipped = []
    for _, line, code, requires in blocks:
        missing = [m for m in requires if importlib.util.find_spec(m) is None]
        if missing:
            skipped.append(f"{_page_id(page)}:{line} needs {', '.join(missing)}")
            continue
        try:
            exec(compile(code, f"{page}:{line}", "exec"), namespace)
        except Exception as e:
            out = capsys.readouterr().out
            raise AssertionError(f"the python block at {_page_id(page)}:{line} failed: {type(e).__name__}: {e}"
                                 + (f"\n--- its page's output so far ---\n{out[-2000:]}" if out else "")) from e
    if skipped:
        sys.stderr.write("skipped (an optional package is missing): " + "; ".join(skipped) + "\n")


def test_readme_is_short_and_its_commands_are_ci_s():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300, "README.md: at most 300 lines; move the detail into docs/"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install = next(line.strip() for line in ci.splitlines() if "pip install" in line)
    assert install.replace(" -q", "") == 'python3 -m pip install -e ".[test]"', install
    assert 'python3 -m pip install -e ".[test]"' in readme
    assert "\npython3 -m pytest\n" in ci and "python3 -m pytest" in readme
    assert "python3 -m tinygrad_rnn train" in readme


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_relative_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#")[0]
        assert (page.parent / path).exists(), f"{_page_id(page)}: the link {target!r} leads nowhere"


NOTEBOOK = ["previous version", "version before", "another run", "earlier development machine",
            "earlier version", "last version", "this version"]


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_no_version_history(page):
    text = page.read_text(encoding="utf-8").lower()
    found = [p for p in NOTEBOOK if p in text]
    assert not found, f"{_page_id(page)}: history belongs in commit messages, not the docs ({found})"
