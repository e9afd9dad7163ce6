"""The coursework kit and its grader: full marks for correct layers, zero for the blank kit,
points lost exactly where a classic bug is, student code kept at arm's length."""
import inspect
import json
import os

import nbformat
import numpy as np
import pytest
from test_notebooks import this_interpreter_kernel  # noqa: F401 (a fixture)

from minigpt import layers as L
from minigpt.coursework import release as R
from minigpt.coursework import runner, solution, student_template
from minigpt.coursework.__main__ import main
from minigpt.coursework.cases import FUNCTIONS, POINTS, CaseError, read_extra_cases
from minigpt.coursework.grade import grade_file, grade_functions

SOLUTION = inspect.getsource(solution)
FULL = 7 * (POINTS["forward"] + POINTS["backward"]) + POINTS["model"]


def losers(report):
    """The functions (and "model") that lost points."""
    return {name for name, (points, most, _, _) in report.functions().items() if points < most - 1e-9}


def bug_file(tmp_path, old, new):
    """solution.py with one edit, written as a student's file."""
    assert SOLUTION.count(old) == 1, old
    path = tmp_path / "student_layers.py"
    path.write_text(SOLUTION.replace(old, new), encoding="utf-8")
    return path


def grade_here(path, **kw):
    """Grade a student's file in this process, with the same minigpt checks as in a child."""
    functions, error = runner.load_student(path)
    assert error is None, error
    return grade_functions(functions, source=path, **kw)


def test_student_template_has_minigpt_layers_contract_and_only_stubs():
    for name in FUNCTIONS:
        ours, theirs = getattr(student_template, name), getattr(L, name)
        assert inspect.signature(ours) == inspect.signature(theirs), name
        assert inspect.signature(getattr(solution, name)) == inspect.signature(theirs), name
        doc = ours.__doc__
        assert "Returns" in doc and "(" in doc, f"{name}: its docstring gives no shapes"
        if name.endswith("_forward"):
            assert "cache" in doc, f"{name}: its docstring does not say what the cache is for"
        args = [None] * len(inspect.signature(ours).parameters)
        with pytest.raises(NotImplementedError):
            ours(*args)


def test_minigpt_own_layers_get_full_marks():
    report = grade_functions({name: getattr(L, name) for name in FUNCTIONS})
    assert report.score == pytest.approx(FULL) and losers(report) == set(), report.table()
    assert report.exit_status() == 0
    tests = report.results_json()["tests"]                  # parts of 4/3 and 8/5 add up exactly, in order
    assert sum(t["max_score"] for t in tests) == pytest.approx(FULL, abs=1e-9)
    assert sum(t["score"] for t in tests) == pytest.approx(FULL, abs=1e-9)
    assert report.results_json()["score"] == FULL


def test_independent_solution_released_with_solutions_gets_full_marks_in_child_processes(tmp_path):
    assert main(["release", str(tmp_path / "answers"), "--with-solutions"]) == 0
    answer = tmp_path / "answers" / "student_layers.py"
    assert "raise NotImplementedError" not in answer.read_text()
    report = grade_file(answer)
    assert report.score == pytest.approx(FULL), report.table()
    assert report.exit_status() == 0


def test_blank_kit_scores_zero_in_one_plain_table_and_writes_gradescope_results(tmp_path, capsys):
    assert main(["release", str(tmp_path / "kit")]) == 0
    results = tmp_path / "results.json"
    status = main(["grade", str(tmp_path / "kit" / "student_layers.py"), "--json", str(results)])
    out = capsys.readouterr()
    assert status == 1 and "Traceback" not in out.out + out.err
    assert "not implemented yet" in out.out and "total" in out.out
    data = json.loads(results.read_text())
    assert data["score"] == 0
    assert {t["name"].split(":")[0] for t in data["tests"]} == set(FUNCTIONS) | {"model"}
    for t in data["tests"]:
        assert set(t) >= {"name", "score", "max_score", "output"} and t["score"] == 0
        assert "\n" not in t["output"]
    assert sum(t["max_score"] for t in data["tests"]) == FULL


def test_release_hands_out_no_solution_and_keeps_a_students_work(tmp_path, capsys):
    kit = tmp_path / "kit"
    assert main(["release", str(kit)]) == 0
    course = nbformat.read(R.COURSE_NOTEBOOK, as_version=4)
    student = nbformat.read(kit / "03_backprop.ipynb", as_version=4)
    solution_lines = set()
    for cell in course.cells:
        inside = False
        for line in cell.source.splitlines():
            inside = (inside or "### BEGIN SOLUTION" in line) and "### END SOLUTION" not in line
            if inside and "SOLUTION" not in line and line.strip():
                solution_lines.add(line.strip())
    assert len(solution_lines) > 30                     # the course notebook has its solutions marked
    code = "\n".join(c.source for c in student.cells if c.cell_type == "code")
    assert not [line for line in solution_lines if line in code.splitlines()]
    assert code.count("raise NotImplementedError()") == len(
        [c for c in course.cells if c.cell_type == "code" and "### BEGIN SOLUTION" in c.source])
    assert all(not c.outputs for c in student.cells if c.cell_type == "code")
    assert not [c for c in student.cells if "execution" in c.metadata]      # no timestamps of the solved run
    assert not [c for c in student.cells if "For instructors" in c.source]
    assert "python -m minigpt.coursework grade student_layers.py" in (kit / "README.md").read_text()
    (kit / "student_layers.py").write_text("# my work\n")
    capsys.readouterr()
    assert main(["release", str(kit)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert (kit / "student_layers.py").read_text() == "# my work\n"


def test_blank_student_notebook_runs_to_the_last_cell(tmp_path, this_interpreter_kernel,  # noqa: F811
                                                       monkeypatch):
    R.release(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(R.COURSE_NOTEBOOK.parents[1]))     # minigpt, as if installed
    nb = nbformat.read(tmp_path / "03_backprop.ipynb", as_version=4)
    from nbclient import NotebookClient
    NotebookClient(nb, timeout=300, kernel_name=this_interpreter_kernel,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert printed.count("not implemented yet") >= 7
    assert "the whole-model check waits for them" in printed
    shown = [o["data"]["text/plain"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if o.output_type == "execute_result"]
    assert not [text for text in shown if text in ("True", "False")], shown   # no stray value of check()


BUGS = {   # name: (text in solution.py, the bug, the functions that must lose points)
    "layernorm backward without the mean term": (
        "dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)\n                 - xhat",
        "dx = rstd * (dxhat\n                 - xhat", {"layernorm_backward"}),
    "gelu derivative without the 3": ("(1.0 + 3.0 * 0.044715 * x * x)", "(1.0 + 0.044715 * x * x)",
                                      {"gelu_backward"}),
    "cross-entropy gradient over all positions": ("float(dloss) / count", "float(dloss) / len(safe_t)",
                                                  {"cross_entropy_backward"}),
    "dwte[idx] += dx": ("np.add.at(dwte, idx.ravel(), dx.reshape(-1, C))", "dwte[idx.ravel()] += dx.reshape(-1, C)",
                        {"embedding_backward"}),
    "attention without the causal mask": ("    s = np.where(future, -np.inf, s)\n", "",   # a right backward
                                          {"attention_forward"}),                       # for that forward
    "softmax backward without the row sum": ("ds = att * (datt - (datt * att).sum(axis=-1, keepdims=True))",
                                             "ds = att * datt", {"attention_backward"}),
    "linear dw transposed": ("dw = rows_x.T @ rows_dy", "dw = rows_dy.T @ rows_x", {"linear_backward"}),
    "gelu backward writes into dout": ("    return dout * slope\n", "    dout *= slope\n    return dout\n",
                                       {"gelu_backward"}),
    "layernorm variance as E[x^2] - E[x]^2": (
        "np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)",
        "np.sqrt((x * x).mean(axis=-1, keepdims=True) - x.mean(axis=-1, keepdims=True) ** 2 + eps)",
        {"layernorm_forward", "layernorm_backward"}),
    "softmax without the max subtracted": ("    shifted = z - z.max(axis=-1, keepdims=True)\n", "    shifted = z\n",
                                           {"cross_entropy_forward", "cross_entropy_backward"}),
    "linear db without a bias": ("db = rows_dy.sum(axis=0) if has_bias else None", "db = rows_dy.sum(axis=0)",
                                 {"linear_backward"}),
    "dropout keeps with probability p": ("(rng.random(x.shape) >= p)", "(rng.random(x.shape) < p)",
                                         {"dropout_forward"}),
    "dropout backward draws a new mask": (
        "    return dout * scale\n", "    return dout * (np.random.default_rng().random(dout.shape) >= 0.3) / 0.7\n",
        {"dropout_backward"}),
    "embedding gradient upcast to float64": ("dwte = np.zeros(wte_shape, dtype=dx.dtype)", "dwte = np.zeros(wte_shape)",
                                             {"embedding_backward"}),
    "gelu backward returns a 1-tuple": ("    return dout * slope\n", "    return (dout * slope,)\n",
                                        {"gelu_backward"}),
    "attention ignores p_drop": ("if p_drop > 0.0 and rng is not None:", "if False:", {"attention_forward"}),
    "attention backward skips the dropout mask": ("        datt = datt * keep\n", "        datt = datt\n",
                                                  {"attention_backward"}),
    "dq without 1/sqrt(hs)": ("    dq = ds @ k / math.sqrt(hs)\n", "    dq = ds @ k\n", {"attention_backward"}),
    "cross-entropy backward writes into its cache": ("dz = probs.copy()", "dz = probs", {"cross_entropy_backward"}),
    "embedding forward writes into wpe": ("    x = wte[idx] + wpe[:T]\n", "    x = wte[idx] + wpe[:T]\n    wpe[T:] = 0.0\n",
                                          {"embedding_forward"}),
    "gelu backward is minigpt's": ("\n\ndef dropout_forward", "\n\nfrom minigpt import layers as L  # noqa\n\n\n"
                                   "def gelu_backward(dout, cache):\n    return L.gelu_backward(dout, cache)\n\n\n"
                                   "def dropout_forward", {"gelu_backward"}),
    "layernorm forward is minigpt's, found at run time": (
        "\n\ndef layernorm_backward", "\n\ndef layernorm_forward(x, w, b, eps=1e-5):\n    import importlib\n"
        "    return importlib.import_module('mini' + 'gpt.layers').layernorm_forward(x, w, b, eps)\n\n\n"
        "def layernorm_backward", {"layernorm_forward", "layernorm_backward"}),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("bug", list(BUGS))
def test_a_classic_bug_loses_points_exactly_where_it_is(bug, tmp_path):
    old, new, where = BUGS[bug]
    report = grade_here(bug_file(tmp_path, old, new))
    assert losers(report) == where | {"model"}, report.table()   # the model: a share per working layer
    broken = {name.rsplit("_", 1)[0] for name in where}
    assert report.functions()["model"][0] == pytest.approx(POINTS["model"] * (7 - len(broken)) / 7)
    assert report.exit_status() == 1
    for name in where:                                   # one plain line says why
        why = report.functions()[name][3]
        assert why and "\n" not in why and "Traceback" not in why


@pytest.mark.filterwarnings("ignore::RuntimeWarning")          # the overflow in the bug itself
def test_messages_name_the_output_shape_error_and_hint(tmp_path):
    old, new, _ = BUGS["layernorm backward without the mean term"]
    why = grade_here(bug_file(tmp_path, old, new)).functions()["layernorm_backward"][3]
    assert why.startswith("0 of 7 cases pass; 3-D input: dx (2, 5, 8): relative error") and "hint: x reaches xhat" in why
    old, new, _ = BUGS["gelu backward writes into dout"]
    assert "modifies dout in place" in grade_here(bug_file(tmp_path, old, new)).functions()["gelu_backward"][3]
    old, new, _ = BUGS["cross-entropy backward writes into its cache"]
    report = grade_here(bug_file(tmp_path, old, new))
    assert "modifies cache in place" in report.functions()["cross_entropy_backward"][3]
    old, new, _ = BUGS["softmax without the max subtracted"]
    why = grade_here(bug_file(tmp_path, old, new)).functions()["cross_entropy_forward"][3]
    assert "NaN or inf" in why and "subtract each row's maximum" in why
    old, new, _ = BUGS["gelu backward returns a 1-tuple"]
    assert "dx is a tuple of 1, not a NumPy array" in grade_here(bug_file(tmp_path, old, new)).functions()[
        "gelu_backward"][3]
    old, new, _ = BUGS["gelu backward is minigpt's"]
    why = grade_here(bug_file(tmp_path, old, new)).functions()["gelu_backward"][3]
    assert "uses minigpt's own code (line" in why


def test_endless_loop_exception_exit_and_minigpt_import_cost_only_their_tests_in_child_processes(tmp_path, capsys):
    source = SOLUTION
    for old, new in [("    return dout * slope\n", "    while True:\n        pass\n"),          # endless loop
                     ("    xhat, rstd, w, has_bias = cache\n",
                      "    xhat, rstd, w, has_bias = cache\n    if xhat.ndim == 2:\n        raise ValueError('2-D!')\n"),
                     ("    scale = cache\n    if scale", "    scale = cache\n    import os\n    os._exit(3)\n    if scale"),
                     ("import numpy as np\n", "import numpy as np\nfrom minigpt import layers as L\n"),
                     ("    T = idx.shape[1]\n", "    T = idx.shape[1]\n    print('hello from embedding' * 500)\n"),
                     ("    x, w, has_bias = cache\n    rows_x", "    return L.linear_backward(dy, cache)\n    rows_x")]:
        assert source.count(old) == 1
        source = source.replace(old, new)
    path = tmp_path / "student_layers.py"
    path.write_text(source)
    assert main(["grade", str(path), "--timeout", "1"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    rows = {line.split()[0]: line for line in out.out.splitlines()[1:]}
    assert "did not finish within 1 s" in rows["gelu_backward"]
    assert "2-D input: raised ValueError: 2-D! (line" in rows["layernorm_backward"]
    assert "ended the grader's process" in rows["dropout_backward"]
    assert "uses minigpt's own code" in rows["linear_backward"]
    lost = {name for name, row in rows.items() if name in FUNCTIONS + ["model"] and row.split()[1] != row.split()[2]}
    assert lost == {"gelu_backward", "layernorm_backward", "dropout_backward", "linear_backward", "model"}
    assert rows["model"].split()[1:3] == [f"{16 * 3 / 7:.1f}", "16.0"]     # the 3 layers that work
    printed = out.out.splitlines()[-1]                       # kept, counted, not lost
    assert printed.startswith("your code printed ") and "'hello from embedding" in printed


def test_a_file_that_does_not_import_scores_zero_with_its_line(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("import numpy as np\n\ndef gelu_forward(x)\n    return x\n")
    assert main(["grade", str(path)]) == 1
    out = capsys.readouterr().out
    assert "it does not import: SyntaxError" in out and "(line 3)" in out and "Traceback" not in out


def test_hidden_cases_are_graded_and_named_by_function(tmp_path):
    cases = tmp_path / "hidden.json"
    cases.write_text(json.dumps({"cases": [
        {"layer": "attention", "name": "5 heads", "seed": 99, "B": 1, "T": 7, "C": 15, "n_head": 5},
        {"layer": "layernorm", "seed": 98, "shape": [3, 2, 40], "bias": False}]}))
    extra = read_extra_cases(cases)
    report = grade_functions({name: getattr(solution, name) for name in FUNCTIONS}, extra_cases=extra)
    names = [t.name for t in report.tests if "hidden" in t.name]
    assert "attention_backward: hidden: 5 heads" in names and len(names) == 4
    assert report.score == pytest.approx(FULL)
    hidden = [t for t in report.results_json()["tests"] if "hidden" in t["name"]]
    assert hidden and all(t["visibility"] == "after_published" for t in hidden)
    # a bug that only a hidden case shows: attention that is wrong from 5 heads on
    def at_most_four_heads(qkv, n_head, p_drop=0.0, rng=None):
        return solution.attention_forward(qkv, min(n_head, 4), p_drop, rng)
    functions = dict({name: getattr(solution, name) for name in FUNCTIONS}, attention_forward=at_most_four_heads)
    assert losers(grade_functions(functions)) == set()           # the kit's own cases do not see it
    assert "attention_forward" in losers(grade_functions(functions, extra_cases=extra))


@pytest.mark.parametrize("content, message", [
    ("{", "cannot read extra cases"),
    ('{"cases": [{"layer": "softmax"}]}', "'layer' must be one of"),
    ('[{"layer": "gelu", "shap": [2, 3]}]', "unknown key 'shap'"),
    ('[{"layer": "attention", "C": 10, "n_head": 3}]', "must be divisible by n_head"),
    ('[{"layer": "linear", "shape": [1000, 1000]}]', "too large"),
    ('[{"layer": "gelu", "scale": "big"}]', "'scale' must be like"),
    ('[{"layer": "gelu", "scale": 1e308}]', "'scale' must be in"),
    ('[{"layer": "gelu", "name": "a"}, {"layer": "gelu", "name": "a", "seed": 3}]', "two gelu cases are named 'a'"),
    ('[{"layer": "gelu", "name": ""}]', "'name' must not be empty"),
    ('[{"layer": "embedding", "repeat": true, "B": 1, "T": 1}]', "'repeat' true needs at least 2 positions"),
    ('[{"layer": "embedding", "repeat": false, "V": 1, "B": 2, "T": 5}]', "'repeat' false needs a distinct id"),
    ('[{"layer": "attention", "p_drop": 0.2, "T": 9}]', "must be at least T"),
])
def test_bad_extra_cases_end_in_one_line_and_exit_status_2(tmp_path, capsys, content, message):
    cases = tmp_path / "cases.json"
    cases.write_text(content)
    with pytest.raises(CaseError, match=message):
        read_extra_cases(cases)
    assert main(["grade", inspect.getsourcefile(solution), "--extra-cases", str(cases)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.split("'")[0] in err


def test_bad_command_lines_end_in_one_line_and_exit_status_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    for argv, says in ((["grade", str(tmp_path / "missing.py")], "no such file"),
                       (["grade", str(tmp_path / "notes.txt")], "not a Python file"),
                       (["grade", str(tmp_path)], "is a directory"),
                       (["grade", inspect.getsourcefile(solution), "--timeout", "0"], "more than 0 and at most 600"),
                       (["release", str(tmp_path / "notes.txt")], "not a folder")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err


def test_a_missing_submission_still_writes_results_json_that_says_why(tmp_path, capsys):
    results = tmp_path / "results.json"
    assert main(["grade", str(tmp_path / "student_layers.py"), "--json", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
    data = json.loads(results.read_text())
    assert data["score"] == 0 and data["tests"] == [] and "no such file" in data["output"]


def test_dropout_is_graded_by_its_properties_not_one_random_stream():
    functions = {name: getattr(solution, name) for name in FUNCTIONS}

    def other_stream(x, p, rng):                        # a different (valid) draw than minigpt's
        return solution.dropout_forward(x, p, np.random.default_rng(12345) if rng is not None else None)
    report = grade_functions(dict(functions, dropout_forward=other_stream))
    assert losers(report) == set(), report.table()


def test_a_partial_file_that_is_right_so_far_exits_zero_with_a_share_of_the_model():
    done = {name: getattr(solution, name) for name in FUNCTIONS if name.startswith(("gelu", "linear"))}
    report = grade_functions(done)
    rows = report.functions()
    assert rows["gelu_backward"][2] == rows["linear_forward"][2] == "pass"
    assert rows["layernorm_forward"][2] == "not implemented"
    assert rows["model"][0] == pytest.approx(POINTS["model"] * 2 / 7)
    assert report.exit_status() == 0


def test_source_check_follows_minigpt_names_through_helpers_but_not_docstrings():
    from minigpt.coursework.source_check import uses_minigpt
    found = uses_minigpt(
        "import numpy as np\nimport minigpt.layers as ML\nfrom minigpt.layers import gelu_forward\n"
        "def _helper(x):\n    return ML.gelu_backward(x, x)\n"
        "def gelu_backward(dout, cache):\n    return _helper(dout)\n"
        "def gelu_forward(x):\n    \"\"\"Mine, not minigpt's.\"\"\"\n    return np.tanh(x), x\n"
        "ALIAS = ML\n"
        "def linear_forward(x, w, b):\n    return ALIAS.linear_forward(x, w, b)\n"
        "def layernorm_forward(x, w, b, eps=1e-5):\n    return __import__('minigpt.layers').layers\n")
    assert set(found) == {"_helper", "gelu_backward", "ALIAS", "linear_forward", "layernorm_forward"}
    assert found["gelu_backward"].startswith("line 2: import minigpt.layers as ML")


def test_minigpt_reached_by_any_route_in_the_child_scores_zero_for_that_function_only(tmp_path, capsys):
    pkg = "'mini' + 'gpt'"                                  # no "minigpt" for the source check to read
    routes = {   # function: (body that reaches minigpt's code at run time, how)
        "gelu_backward": "    sys.setprofile(None)\n    return _REF.gelu_backward(dout, cache)\n",
        "layernorm_backward": "    out = []\n    t = threading.Thread(target=lambda: out.append(importlib.import_module("
                              f"{pkg} + '.layers').layernorm_backward(dout, cache)))\n"
                              "    t.start()\n    t.join()\n    return out[0]\n",
        "linear_backward": f"    return importlib.import_module({pkg} + '.layers').linear_backward(dy, cache)\n",
        "embedding_backward": "    import glob\n    found = [p for d in sys.path + [ROOT] for p in glob.glob(d + '/' + "
                              f"{pkg} + '/layers.py')]\n"
                              "    spec = importlib.util.spec_from_file_location('x', found[0])\n"
                              "    m = importlib.util.module_from_spec(spec)\n    spec.loader.exec_module(m)\n"
                              "    return m.embedding_backward(dx, cache)\n",
        "cross_entropy_backward": "    sys.meta_path[:] = [f for f in sys.meta_path if 'Path' in "
                                  "type(f).__name__]\n    sys.path.append(ROOT)\n"
                                  f"    return importlib.import_module({pkg} + '.layers').cross_entropy_backward("
                                  "dloss, cache)\n",
    }
    root = str(R.HERE.parents[1]).encode("utf-8").hex()     # the checkout's path may say "minigpt" itself
    header = (f"import importlib, importlib.util, sys, threading\nimport __main__\n"
              f"ROOT = bytes.fromhex({root!r}).decode('utf-8')\n"
              f"_REF = importlib.import_module({pkg} + '.layers')\n"
              "try:\n    __main__.Student.call = lambda self, name, *a: self.functions[name](*a)\n"
              "except AttributeError:\n    pass\n")
    source = SOLUTION.replace("import numpy as np\n", "import numpy as np\n" + header, 1)
    tree = {n.name: n for n in __import__("ast").parse(source).body if isinstance(n, __import__("ast").FunctionDef)}
    lines = source.splitlines(keepends=True)
    for name in sorted(routes, key=lambda n: -tree[n].lineno):   # replace each body, last first
        node = tree[name]
        lines[node.body[1].lineno - 1:node.end_lineno] = [routes[name]]
    path = tmp_path / "student_layers.py"
    path.write_text("".join(lines))
    from minigpt.coursework.source_check import uses_minigpt
    assert not uses_minigpt(path.read_text())                # so the run-time guard alone must see it
    assert main(["grade", str(path)]) == 1
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    for name in routes:
        # the kernel refuses some routes before the guard sees them: no thread (RLIMIT_NPROC), and as
        # root minigpt's package cannot even be listed by the student's user (glob finds nothing)
        kernel = {"layernorm_backward": "can't start new thread"} | (
            {"embedding_backward": "raised IndexError"} if os.geteuid() == 0 else {})
        refused = name in kernel and kernel[name] in rows[name]
        assert rows[name].split()[1] == "0.0" and ("calls minigpt's own code" in rows[name] or refused), rows[name]
    lost = {name for name, row in rows.items() if name in FUNCTIONS + ["model"] and row.split()[1] != row.split()[2]}
    assert lost == set(routes) | {"model"}


def test_source_check_follows_scopes_and_skips_the_main_block():
    from minigpt.coursework.source_check import uses_minigpt
    found = uses_minigpt(
        "import numpy as np\n"
        "def gelu_backward(dout, cache):\n    g = 0.5 * (1.0 + np.tanh(cache))\n    return dout * g\n"
        "def gelu_forward(x):\n    from minigpt import layers as q\n    return q.gelu_forward(x)\n"
        "def attention_forward(qkv, n_head, p_drop=0.0, rng=None):\n    q = qkv[..., :4]\n    return q, q\n"
        "def attention_backward(dy, cache):\n    q = cache\n    return dy * q\n"
        "def layernorm_forward(x, w, b, eps=1e-5):\n    return f(x)\n"
        "if __name__ == '__main__':\n    from minigpt.layers import gelu_forward as f, gelu_backward as g\n"
        "    import minigpt.layers as q\n    print(g(f(np.ones(3))[0], np.ones(3)))\n")
    assert set(found) == {"gelu_forward"} and found["gelu_forward"].startswith("line 6: from minigpt")


def test_a_pair_that_raises_only_in_the_model_costs_its_share_not_the_whole_model(tmp_path):
    old = "    x = cache\n    s = math.sqrt(2.0 / math.pi)\n"
    path = bug_file(tmp_path, old, old + "    if x.shape[-1] == 48:\n        raise ValueError('not in the model')\n")
    report = grade_here(path)                                # the model's MLP is 4 * 12 = 48 wide
    assert losers(report) == {"model"}, report.table()
    assert report.functions()["model"][0] == pytest.approx(POINTS["model"] * 6 / 7)
    assert "left out gelu: gelu_backward raised ValueError: not in the model" in report.functions()["model"][3]


def test_the_grader_prints_no_warning_of_its_own_on_inf_and_nan_outputs():
    import warnings

    def gelu_forward(x):
        out = np.full_like(x, np.inf)
        out.flat[0] = np.nan
        return out, x
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        report = grade_functions({"gelu_forward": gelu_forward, "gelu_backward": solution.gelu_backward})
    assert "NaN or inf" in report.functions()["gelu_forward"][3]
    assert not seen, [str(w.message) for w in seen]
