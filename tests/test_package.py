"""minigpt installs as a package: pyproject.toml ships every module, subpackage and data file."""
import fnmatch
import tomllib
from pathlib import Path

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
