"""minigpt installs as a package: pyproject.toml ships every module, subpackage and data file."""
import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minigpt"


def _config():
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_subpackage_is_found_by_the_package_list():
    include = _config()["tool"]["setuptools"]["packages"]["find"]["include"]
    for init in PACKAGE.rglob("__init__.py"):
        name = ".".join(init.parent.relative_to(ROOT).parts)
        assert any(fnmatch.fnmatch(name, pattern) for pattern in include), name


def test_every_data_file_in_the_package_is_package_data():
    patterns = _config()["tool"]["setuptools"]["package-data"]["minigpt"]
    data = [p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert any(p.name == "encoder.json" for p in data)          # the GPT-2 files are in there
    for p in data:
        rel = p.relative_to(PACKAGE).as_posix()
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), f"{rel} would not be installed"


def test_the_requirements_install_minigpt_itself():
    lines = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    assert "-e ." in lines


def _imports(path, module):
    """The minigpt modules that `module` (at `path`) imports, lazily or not."""
    import ast
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            package = module.split(".")[:-node.level] if path.name != "__init__.py" or node.level > 1 \
                else module.split(".")
            if path.name == "__init__.py" and node.level > 1:
                package = module.split(".")[:-(node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
            found |= {f"{base}.{a.name}" for a in node.names} if node.module is None else {base}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minigpt"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("minigpt")}
    return found


def test_no_two_modules_import_each_other():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = _imports(path, module) - {module}
    assert graph["minigpt.checkpoint"] >= {"minigpt.model"}       # the walk sees real imports
    circles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a]
                      if a in graph.get(b, ()) and "minigpt" not in (a, b)})
    assert not circles, circles


@pytest.mark.parametrize("script, prog", [("minigpt/train.py", "minigpt.train"), ("minigpt/sample.py", "minigpt.sample"),
                                          ("minigpt/attention.py", "minigpt.attention"),
                                          ("minigpt/gradcheck.py", "minigpt.gradcheck"),
                                          ("minigpt/coursework", "minigpt.coursework")])
def test_a_command_run_as_a_file_runs_as_its_module(script, prog, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and f"usage: python -m {prog}" in done.stdout, done.stderr
    assert "ImportError" not in done.stderr


def test_a_file_run_keeps_the_modules_exit_status_and_one_line_errors(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "minigpt" / "train.py"), str(tmp_path / "none.txt")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
