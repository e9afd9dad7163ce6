"""Write the student kit: student_layers.py, the student notebook and a README.

    release("kit/")                          # what students get: no solution anywhere
    release("answers/", with_solutions=True) # the instructor's copy

The student notebook is the course notebook notebooks/03_backprop.ipynb with
every nbgrader region (### BEGIN SOLUTION ... ### END SOLUTION) replaced by
nbgrader's stub, its outputs cleared, and the cells tagged "instructor"
dropped. student_layers.py is student_template.py; with solutions, its bodies
come from solution.py.
"""
import ast
import json
import re
from pathlib import Path

from ..fileio import atomic_write

HERE = Path(__file__).resolve().parent
COURSE_NOTEBOOK = HERE.parents[1] / "notebooks" / "03_backprop.ipynb"
BEGIN = re.compile(r"^(\s*)### BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*### END SOLUTION\s*$")
STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]

KIT_README = """\
# Backpropagation by hand: the student kit

You will write the forward and the backward pass of every layer of GPT-2 in plain
NumPy, check each against finite differences, and run a whole GPT on your code.

## What is here

- `03_backprop.ipynb`: the derivations, one layer at a time. Each `my_..._backward`
  cell raises `NotImplementedError` until you fill it in; the cell after it checks
  your function and says `OK`, `FAIL` (with the relative error) or
  `not implemented yet`. Run All works at any stage.
- `student_layers.py`: the graded file. Every function of the layer contract,
  with its shapes and formula in the docstring and a body that raises
  `NotImplementedError`. Here you write the forwards as well, with caches of your
  own design.

## In what order

1. Install minigpt (`pip install -e .` in a minigpt checkout) and open the notebook.
2. Work through the notebook top to bottom: linear, GELU, LayerNorm, cross-entropy,
   the tied embedding, attention, then the whole model.
3. In `student_layers.py`, write each pair in the same order: `linear_*`, `gelu_*`,
   `layernorm_*`, `cross_entropy_*`, `embedding_*`, `dropout_*`, `attention_*`.

## How to check yourself as you go

    python -m minigpt.coursework grade student_layers.py

grades whatever you have written so far: one row per function with its points,
how many of its cases pass, and the first thing that is wrong (which output, its
shape, the relative error, a hint); functions you have not written say
`not implemented yet`. Each layer whose forward and backward both pass every case
also runs inside a whole GPT (minigpt's layers stand in for the ones that do not
yet), checked parameter by parameter: the model's 16 points are shared out, 16/7
per layer that works in it, so all of them only when all 7 layers do.

How a backward is graded: the grader calls your forward, then calls it again on
other inputs of the same shapes, then your backward with the FIRST call's cache,
and compares the gradients with minigpt's. So the backward must read its cache
alone, never a global the forward set. Your backward depends on your forward:

- a forward that raises leaves no cache, so its backward is not graded on that
  case and earns nothing there;
- a forward that stores a wrong cache (say, xhat of the wrong rows) costs its
  backward too, since the backward computes from it;
- a forward whose output is wrong but whose cache is right costs the forward
  alone: the backward still earns its points when it gives minigpt's gradient.
  Where the forward is wrong, a backward that is the exact gradient of the
  forward you wrote also passes, as long as that forward really depends on its
  inputs (a forward that returns zeros gives its backward nothing to match).
  On attention's dropout case the backward must give minigpt's gradient for
  your own mask: the one your forward's output shows, or, if that output is
  wrong, the one your dv implies (it must be a dropout of about p_drop of the
  weights).

The rules the grader enforces: use NumPy, not minigpt (a function that calls
minigpt's own layers earns nothing); never write into an input, `dout` or the
cache; float32 in, float32 out; return one gradient per input, in the forward's
order (the loss: a 0-d array of the logits' dtype; a Python float is float64);
use the arguments you are given (`eps`, `ignore_index`, `rng`: `rng=None`
means no dropout, and the same seed must give the same mask, so draw it with
`rng`, never `np.random`). Keep self-tests under `if __name__ == "__main__":`: the
grader imports your file under the same time limit as each case, once per layer
and once per whole-model run, so a slow top level costs you many times. Your instructor
may grade with extra cases you have not seen, so test more shapes than the kit
does: the grader's cases vary C, T, the number of heads and LayerNorm's width.
"""


class ReleaseError(ValueError):
    """The kit cannot be written: the message is one line."""


def stub_solutions(source):
    """Source text with every BEGIN/END SOLUTION region replaced by nbgrader's stub."""
    out, inside = [], None
    for number, line in enumerate(source.splitlines(keepends=False), 1):
        begin = BEGIN.match(line)
        if begin:
            if inside is not None:
                raise ReleaseError(f"nested ### BEGIN SOLUTION at line {number}")
            inside = begin.group(1)
            out += [inside + s for s in STUB]
        elif END.match(line):
            if inside is None:
                raise ReleaseError(f"### END SOLUTION without a BEGIN at line {number}")
            inside = None
        elif inside is None:
            out.append(line)
    if inside is not None:
        raise ReleaseError("### BEGIN SOLUTION without an END")
    return "\n".join(out)


def student_notebook(course):
    """The student version of a course notebook (a dict in nbformat 4)."""
    nb = json.loads(json.dumps(course))
    cells = []
    for cell in nb["cells"]:
        if "instructor" in cell.get("metadata", {}).get("tags", []):
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code":
            source = stub_solutions(source)
            cell["outputs"], cell["execution_count"] = [], None
        if cell["cell_type"] == "code" and ("### BEGIN SOLUTION" in source or "### END SOLUTION" in source):
            raise ReleaseError("a solution marker survived in the student notebook")
        cell["source"] = source
        cells.append(cell)
    nb["cells"] = cells
    return nb


def without_run_times(nb):
    """A copy of nb without the timestamps Jupyter keeps in each cell's metadata ("execution")."""
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("execution", None)
    return nb


def solved_template():
    """student_template.py with each `raise NotImplementedError` replaced by solution.py's body."""
    template = (HERE / "student_template.py").read_text(encoding="utf-8")
    solution = (HERE / "solution.py").read_text(encoding="utf-8")
    bodies = {}
    sol_lines = solution.splitlines()
    for node in ast.parse(solution).body:
        if isinstance(node, ast.FunctionDef):
            bodies[node.name] = sol_lines[node.body[1].lineno - 1:node.end_lineno]
    lines = template.splitlines()
    for node in sorted((n for n in ast.parse(template).body if isinstance(n, ast.FunctionDef)),
                       key=lambda n: -n.lineno):
        stub = node.body[-1]
        lines[stub.lineno - 1:stub.end_lineno] = bodies[node.name]
    text = "\n".join(lines) + "\n"
    return text.replace("Fill in every function below; each one now raises NotImplementedError.",
                        "The instructor's solution (minigpt.coursework.solution), in the student's file.")


def release(out_dir, with_solutions=False, overwrite=False):
    """Write the kit into out_dir; returns the paths written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReleaseError(f"{out} exists and is not a folder")
    if not COURSE_NOTEBOOK.is_file():
        raise ReleaseError(f"the course notebook {COURSE_NOTEBOOK} is missing: release from a minigpt checkout")
    try:
        course = json.loads(COURSE_NOTEBOOK.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReleaseError(f"cannot read the course notebook {COURSE_NOTEBOOK}: {e}") from None
    if with_solutions:
        layers_py, notebook = solved_template(), without_run_times(course)
    else:
        layers_py = (HERE / "student_template.py").read_text(encoding="utf-8")
        notebook = without_run_times(student_notebook(course))
    files = {"student_layers.py": layers_py, "03_backprop.ipynb": json.dumps(notebook, indent=1) + "\n",
             "README.md": KIT_README}
    existing = [name for name in files if (out / name).exists()]
    if existing and not overwrite:
        raise ReleaseError(f"{out} already has {', '.join(existing)} (a student's work?): "
                           "pass --overwrite to replace, or choose another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            atomic_write(out / name, lambda f, t=text: f.write(t.encode("utf-8")))
    except OSError as e:
        raise ReleaseError(f"cannot write the kit into {out}: {e}") from None
    return [out / name for name in files]
