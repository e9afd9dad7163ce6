"""The notebooks run top to bottom from a clean kernel, and are saved with their outputs.

Each notebook is executed the way a student runs it: a fresh Python kernel,
working folder notebooks/, every cell in order. Any exception in any cell
fails the test, and the message names the cell. The kernel is always the
interpreter running the tests (so it sees this checkout's dependencies), even
on a machine whose default "python3" kernel points at another Python.
Files a notebook writes go to a temporary folder (MINIGPT_NOTEBOOK_OUT).
"""
import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = ["01_attention.ipynb", "02_tokens_to_text.ipynb", "03_backprop.ipynb",
            "04_pretrain_finetune.ipynb", "05_data_parallel.ipynb", "06_finetune_for_a_task.ipynb",
            "07_applications.ipynb"]
FOUND = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))   # a new notebook is tested too
CELL_TIMEOUT_S = 600                   # generous: a contended 2-core machine can be slow
NEEDS = {"05_data_parallel.ipynb": "mpi4py"}   # skipped without it, except under CI, which installs it


@pytest.fixture(scope="module")
def this_interpreter_kernel(tmp_path_factory):
    """A "python3" kernelspec that starts sys.executable, placed first on JUPYTER_PATH."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)", "language": "python"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(root), os.environ.get("JUPYTER_PATH")])))
        yield "python3"


def execute(nb, kernel_name):
    """Run every cell of nb in place, in a fresh kernel started in notebooks/."""
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return nb


def code_cell(source):
    return nbformat.v4.new_code_cell(source)


def test_the_course_notebooks_are_in_the_repository():
    assert set(EXPECTED) <= set(FOUND), f"missing: {sorted(set(EXPECTED) - set(FOUND))}"


def test_the_kernel_is_the_interpreter_running_the_tests(this_interpreter_kernel):
    nb = nbformat.v4.new_notebook()
    nb.cells = [code_cell("import sys; print(sys.executable)")]
    execute(nb, this_interpreter_kernel)
    printed = nb.cells[0].outputs[0]["text"].strip()
    assert os.path.samefile(printed, sys.executable)


def test_a_failing_cell_fails_the_run(this_interpreter_kernel):
    nb = nbformat.v4.new_notebook()
    nb.cells = [code_cell("x = 1"), code_cell("raise ValueError('boom')"), code_cell("y = 2")]
    with pytest.raises(CellExecutionError, match="boom"):
        execute(nb, this_interpreter_kernel)


@pytest.mark.parametrize("name", FOUND)
def test_notebook_is_saved_with_outputs_plots_and_a_markdown_cell_before_each_code_cell(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        f"{name} was not saved after running top to bottom in one kernel"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name} was saved with an error output: {errors[0].get('ename')}"
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{name} was saved without its plots"
    for before, cell in zip(nb.cells, nb.cells[1:]):
        if cell.cell_type == "code":
            assert before.cell_type == "markdown", f"{name}: no markdown before {cell.source[:60]!r}"


@pytest.mark.parametrize("name", FOUND)
def test_notebook_runs_top_to_bottom_from_a_clean_kernel(name, this_interpreter_kernel, tmp_path, monkeypatch):
    if name in NEEDS and not os.environ.get("CI"):
        pytest.importorskip(NEEDS[name])
    monkeypatch.setenv("MINIGPT_NOTEBOOK_OUT", str(tmp_path))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    t0 = time.perf_counter()
    try:
        execute(nb, this_interpreter_kernel)
    except CellExecutionError as e:
        pytest.fail(f"{name} failed in a cell:\n{e}", pytrace=False)
    print(f"{name}: {time.perf_counter() - t0:.0f} s")
