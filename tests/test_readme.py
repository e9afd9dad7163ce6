"""The README and docs/ cannot drift from the code: every command in a code block names
modules, flags and repository files that exist, and every relative link resolves."""
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REPO_DIRS = ("notebooks/", "benchmarks/", "minigpt/", "tests/", "docs/")


def code_blocks(text):
    """The shell code blocks of a markdown text: fenced (no language, bash, sh) or indented."""
    blocks, fence, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if fence is None:
                fence, lines = line[3:].strip(), []
            else:
                if fence in ("", "bash", "sh", "console"):
                    blocks.append("\n".join(lines))
                fence = None
        elif fence is not None:
            lines.append(line)
    blocks += re.findall(r"^\n((?:    +\S.*\n)+)", re.sub(r"(?ms)^```.*?^```", "", text), flags=re.M)
    return blocks


def commands(page):
    """Each shell command in the page's code blocks (continuation lines joined, comments cut)."""
    for block in code_blocks(page.read_text(encoding="utf-8")):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip()
            if line.startswith(("python ", "pip ", "bash ", "mpiexec ", "jupyter ", "/usr/bin/time ")):
                yield shlex.split(line, comments=True)


@lru_cache(maxsize=None)
def help_text(module, sub=None):
    """`python -m module [sub] --help`, or None when that is not a command."""
    argv = [sys.executable, "-m", module] + ([sub] if sub else []) + ["--help"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120)
    return done.stdout if done.returncode == 0 else None


def check_command(words):
    problems = []
    for w in words:
        path = w.split("=", 1)[-1]
        if path.startswith(REPO_DIRS) or path == "shakespeare.txt":
            if not (ROOT / path).exists():
                problems.append(f"{path} does not exist")
    if "-m" in words and words[words.index("-m") + 1].startswith("minigpt."):
        at = len(words) - 1 - words[::-1].index("-m")        # the last -m (after `-m mpi4py`)
        module, rest = words[at + 1], words[at + 2:]
        top = help_text(module)
        if top is None:
            return problems + [f"python -m {module} --help fails"]
        sub = rest[0] if rest and not rest[0].startswith("-") else None
        helps = top + (help_text(module, sub) or "" if sub else "")
        problems += [f"{module} has no flag {f}" for f in flags(rest) if f not in helps]
    for w in words:
        if w.endswith(".py") and w.startswith("benchmarks/") and (ROOT / w).exists():
            source = (ROOT / w).read_text(encoding="utf-8")
            rest = words[words.index(w) + 1:]
            problems += [f"{w} has no flag {f}" for f in flags(rest) if f'"{f}"' not in source]
    return problems


def flags(words):
    return [w.split("=", 1)[0] for w in words if w.startswith("--")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_names_flags_and_files_that_exist(page):
    found = list(commands(page))
    problems = [f"{' '.join(c)}: {p}" for c in found for p in check_command(c)]
    assert not problems, "\n".join(problems)


def test_the_readme_shows_the_install_run_and_test_commands():
    found = [" ".join(c) for c in commands(ROOT / "README.md")]
    for wanted in ("pip install -r requirements.txt", "python -m minigpt.train shakespeare.txt",
                   "python -m pytest -q"):
        assert any(c.startswith(wanted) for c in found), wanted


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    text = page.read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text)]
    broken = [t for t in targets if t and "://" not in t and not (page.parent / t).exists()]
    assert not broken, broken


def test_the_check_catches_a_flag_that_does_not_exist():
    assert check_command(["python", "-m", "minigpt.train", "shakespeare.txt", "--no-such-flag"])
    assert check_command(["python", "benchmarks/no_such_bench.py"])
    assert not check_command(["python", "-m", "minigpt.train", "shakespeare.txt", "--max-time", "2"])
