"""The grader's verdicts on bugs of the layer contract: each bug below is solution.py with one
edit, and the test names the functions that lose points and what their line says. A file of
zeros earns nothing; a right backward keeps its marks beside a wrong forward."""
import json
from pathlib import Path

import pytest
from test_coursework import FULL, bug_file, grade_here, losers

from minigpt.coursework import solution
from minigpt.coursework.__main__ import main
from minigpt.coursework.cases import FUNCTIONS, POINTS, BUILTIN, read_extra_cases
from minigpt.coursework.grade import grade_functions

HERE = Path(__file__).parent
SOLUTION_TEXT = (HERE.parent / "minigpt" / "coursework" / "solution.py").read_text()

BUGS = {   # name: (text in solution.py, the bug, {function that loses points: what its line says})
    "dropout still drops when rng is None": (
        "    if p == 0.0 or rng is None:\n        return x, None\n",
        "    if p == 0.0:\n        return x, None\n    rng = rng if rng is not None else np.random.default_rng(1)\n",
        {"dropout_forward": "rng None is the identity: with rng None dropout must be the identity"}),
    "dropout draws its mask from np.random": (
        "(rng.random(x.shape) >= p)", "(np.random.random(x.shape) >= p)",
        {"dropout_forward": "same seed it drew a different mask: draw the mask with the rng argument"}),
    "attention softmax without the max subtracted": (
        "    e = np.exp(s - s.max(axis=-1, keepdims=True))\n", "    e = np.exp(s)\n",
        {"attention_forward": "large scores (qkv x30): out (1, 6, 8) has NaN or inf entries (hint: subtract "
                              "each row's maximum score before exp",
         "attention_backward": "a forward that stores a wrong cache costs its backward too"}),
    "cross-entropy ignores ignore_index (t >= 0)": (   # the backward is the gradient of the forward written
        "    counted = t != ignore_index\n", "    counted = t >= 0\n",
        {"cross_entropy_forward": "ignore_index = 3 (a class id): loss (): relative error"}),
    "layernorm eps hard-coded": (   # the backward is the exact gradient of that forward: it keeps its marks
        "np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)",
        "np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + 1e-5)",
        {"layernorm_forward": "eps = 0.01 on rows of small variance: out (5, 20): relative error"}),
    "gelu backward reads x from a global the forward set": (
        "    return out, x\n\n\ndef gelu_backward(dout, cache):\n    \"\"\"dout times the derivative of the tanh "
        "approximation.\"\"\"\n    x = cache\n",
        "    global LAST\n    LAST = x\n    return out, x\n\n\ndef gelu_backward(dout, cache):\n    x = LAST\n",
        {"gelu_backward": "dx is the gradient for the forward's second call, not for the cache it was given"}),
    "cross-entropy loss divided by all positions (forward only)": (
        "(nll * counted).sum() / count", "(nll * counted).sum() / len(t)",
        {"cross_entropy_forward": "one ignored target: loss (): relative error"}),
    "gelu forward with the exact erf (forward only)": (
        "    out = 0.5 * x * (1.0 + np.tanh(s * (x + 0.044715 * x ** 3)))\n",
        "    erf = np.vectorize(math.erf)\n    out = (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)\n",
        {"gelu_forward": "3-D input: out (2, 5, 16): relative error"}),
    "layernorm forward raises on 2-D input": (
        "    centred = x - x.mean(axis=-1, keepdims=True)\n",
        "    if x.ndim == 2:\n        raise ValueError('rows?')\n    centred = x - x.mean(axis=-1, keepdims=True)\n",
        {"layernorm_forward": "2-D input: raised ValueError: rows?",
         "layernorm_backward": "2-D input: not graded: layernorm_forward failed on this case (raised ValueError: "
                               "rows? (line"}),
    "layernorm forward caches rstd without eps (right output, wrong cache)": (
        "    return out, (xhat, rstd, w, b is not None)\n",
        "    return out, (xhat, 1.0 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True)), w, b is not None)\n",
        {"layernorm_backward": "dx (2, 5, 8): relative error"}),
    "layernorm backward hard-codes C = 8": (
        "    C = xhat.shape[-1]\n", "    C = 8\n", {"layernorm_backward": "2-D input: raised ValueError"}),
    "attention forward hard-codes 2 heads": (
        "    hs = C // n_head\n", "    n_head = 2\n    hs = C // n_head\n",
        {"attention_forward": "1 head: out (2, 4, 8): relative error",
         "attention_backward": "3 heads of size 3: not graded: attention_forward failed on this case (raised "
                               "ValueError: cannot reshape"}),
    "embedding dwpe from the first sequence only": (
        "dwpe[:dx.shape[1]] = dx.sum(axis=0)", "dwpe[:dx.shape[1]] = dx[0]",
        {"embedding_backward": "repeated ids: dwpe (8, 8): relative error 7.2e-01 against the reference, 8.4e-01 "
                               "against finite differences of your forward (hint: row t of dwpe is dx summed over "
                               "the batch at time t"}),
    "cross-entropy backward ignores dloss": (
        "float(dloss) / count", "1.0 / count",
        {"cross_entropy_backward": "(hint: multiply by dloss, the upstream gradient"}),
    "cross-entropy log of a softmax that underflows": (
        "    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))\n",
        "    log_probs = np.log(np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True))\n",
        {"cross_entropy_forward": "large logits (x1000): loss () has NaN or inf entries (hint: subtract each row's "
                                  "maximum before exp, and take log-softmax as (z - max) - log(sum(exp(z - max))): "
                                  "log(softmax) is -inf"}),
    "attention dv from the weights before dropout": (
        "    dv = att_used.transpose(0, 1, 3, 2) @ dy\n", "    dv = att.transpose(0, 1, 3, 2) @ dy\n",
        {"attention_backward": "dropout on the weights, p_drop = 0.3: dqkv (4, 8, 48): relative error"}),
    "layernorm forward forgets + b": (
        "        out = out + b\n", "        out = out\n",
        {"layernorm_forward": "3-D input: out (2, 5, 8): relative error 3.3e-01 against the reference (hint: out = "
                              "xhat * w + b: the + b is missing)"}),
    "cross-entropy caches the log-probabilities for the backward": (   # count and ignored rows are right
        "    return loss, (np.exp(log_probs), safe_t,", "    return loss, (log_probs, safe_t,",
        {"cross_entropy_backward": "(hint: dlogits = dloss * (probs - onehot(target)) / count, and 0 on ignored"}),
    "cross-entropy backward divides by every position": (
        "float(dloss) / count", "float(dloss) / len(safe_t)",
        {"cross_entropy_backward": "3-D logits, one ignored target: dlogits (2, 5, 11): relative error 1.0e-01 "
                                   "against the reference, 1.0e-01 against finite differences of your forward (hint: "
                                   "divide by the number of counted positions (9 here), not 10)"}),
    "cross-entropy loss returned as a Python float": (   # a float64 scalar passes the float64 cases
        "    loss = np.asarray((nll * counted).sum() / count, dtype=logits.dtype)\n",
        "    loss = float((nll * counted).sum() / count)\n",
        {"cross_entropy_forward": "5 of 6 cases pass; float32: loss is float64 for float32 inputs (a Python float is "
                                  "always float64"}),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("bug", list(BUGS))
def test_a_contract_bug_loses_points_where_it_is_and_says_why(bug, tmp_path):
    old, new, where = BUGS[bug]
    report = grade_here(bug_file(tmp_path, old, new))
    rows = report.functions()
    assert losers(report) == set(where) | {"model"}, report.table()
    for name, says in where.items():
        assert says in rows[name][3], (name, rows[name][3])
        assert "\n" not in rows[name][3]
    broken = {name.rsplit("_", 1)[0] for name in where}
    assert rows["model"][0] == pytest.approx(POINTS["model"] * (7 - len(broken)) / 7)


def test_a_file_of_zeros_earns_nothing():
    """Every forward and backward returns zeros: the finite differences of a constant are 0, so
    they cannot vouch for a backward of zeros (it scored 53.1 when they could)."""
    report = grade_here(HERE / "coursework_bugs" / "zeros.py")
    assert report.score == 0, report.table()
    why = report.functions()["gelu_backward"][3]
    assert "barely depends on its input here, so its finite differences do not count" in why
    assert "not x through a dropout mask" in report.functions()["dropout_backward"][3]


def test_each_row_counts_its_cases_and_the_total_says_hidden_cases_ran(tmp_path):
    old, new, _ = BUGS["layernorm backward hard-codes C = 8"]
    report = grade_here(bug_file(tmp_path, old, new))
    n = sum(spec["layer"] == "layernorm" for spec in BUILTIN)
    assert report.functions()["layernorm_backward"][3].startswith(f"1 of {n} cases pass; 2-D input: ")
    assert report.functions()["gelu_backward"][3] == "4 of 4 cases pass"
    cases = tmp_path / "hidden.json"
    cases.write_text(json.dumps([{"layer": "gelu", "name": "wide", "seed": 5, "shape": [3, 40]}]))
    report = grade_functions({name: getattr(solution, name) for name in FUNCTIONS},
                             extra_cases=read_extra_cases(cases))
    assert report.functions()["gelu_forward"][3] == "5 of 5 cases pass (1 hidden)"
    assert "1 hidden cases from --extra-cases ran" in report.table().splitlines()[-1]


def test_results_json_scores_print_rounded():
    from minigpt import layers as L
    data = grade_functions({name: getattr(L, name) for name in FUNCTIONS}).results_json()
    assert all(t["max_score"] == round(t["max_score"], 4) for t in data["tests"])
    assert data["tests"][-1]["max_score"] == 16.0 and data["score"] == FULL
    assert sum(t["max_score"] for t in data["tests"]) == pytest.approx(FULL, abs=1e-9)


def test_an_import_failure_is_one_line_that_says_what_the_grader_has(tmp_path, capsys):
    path = tmp_path / "student_layers.py"
    path.write_text("import numpy as np\nimport scipy_is_not_here\n\n\ndef gelu_forward(x):\n    return x, x\n")
    assert main(["grade", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("total"), out
    assert out[0].startswith("student file: it does not import: ModuleNotFoundError: No module named "
                             "'scipy_is_not_here' (line 2); the grader's Python has its standard library and numpy")


def test_a_slow_module_level_self_test_names_the_limit_and_main_block(tmp_path, capsys):
    path = tmp_path / "student_layers.py"
    path.write_text("import time\n\ntime.sleep(30)\n\n\ndef gelu_forward(x):\n    return x, x\n")
    results = tmp_path / "results.json"
    assert main(["grade", str(path), "--timeout", "1", "--json", str(results)]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert "took longer than the 1 s limit (--timeout)" in first and 'if __name__ == "__main__":' in first
    assert "took longer than the 1 s limit" in json.loads(results.read_text())["output"]


@pytest.mark.parametrize("content, message", [
    ('[{"layer": "gelu"}, {"layer": "attention", "name": "wide", "C": 10, "n_head": 3}]',
     "case 2 ('wide'): C (10) must be divisible by n_head (3)"),
    ('[{"layer": "dropout", "rng": "global"}]', "case 1: 'rng' must be 'generator'"),
])
def test_cases_file_errors_count_from_one_and_name_the_case(tmp_path, content, message):
    cases = tmp_path / "cases.json"
    cases.write_text(content)
    with pytest.raises(ValueError) as e:
        read_extra_cases(cases)
    assert message in str(e.value)


def test_the_contract_arguments_are_keys_of_hidden_cases(tmp_path):
    """rng None, the same seed, ignore_index, eps and large attention scores, as an instructor's cases."""
    cases = tmp_path / "hidden.json"
    cases.write_text(json.dumps([
        {"layer": "dropout", "name": "no rng", "rng": "none", "p": 0.4},
        {"layer": "attention", "name": "no rng", "rng": "none", "p_drop": 0.5, "T": 9},
        {"layer": "cross_entropy", "name": "ignore -100", "ignore_index": -100, "ignore": 3},
        {"layer": "layernorm", "name": "eps 0.1", "eps": 0.1, "scale": 0.3, "shape": [4, 7]},
        {"layer": "attention", "name": "huge scores", "scale": 40.0, "C": 12, "n_head": 3}]))
    extra = read_extra_cases(cases)
    assert grade_functions({n: getattr(solution, n) for n in FUNCTIONS}, extra_cases=extra).score == \
        pytest.approx(FULL)
    source = (HERE.parent / "minigpt" / "coursework" / "solution.py").read_text()
    for old, new, function in [
            ("    if p == 0.0 or rng is None:\n", "    if p == 0.0:\n", "dropout_forward"),
            ("if p_drop > 0.0 and rng is not None:", "if p_drop > 0.0 and (rng := rng or "
             "np.random.default_rng(0)) is not None:", "attention_forward"),
            ("    counted = t != ignore_index\n", "    counted = t != -1\n", "cross_entropy_forward"),
            ("keepdims=True) + eps)", "keepdims=True) + 1e-5)", "layernorm_forward"),
            ("    e = np.exp(s - s.max(axis=-1, keepdims=True))\n", "    e = np.exp(s)\n", "attention_forward")]:
        assert source.count(old) == 1
        path = tmp_path / f"{function}_{len(new)}.py"
        path.write_text(source.replace(old, new))
        rows = {t.name: t for t in grade_here(path, extra_cases=extra).tests}
        hidden = [t for name, t in rows.items() if name.startswith(function + ": hidden")]
        assert any(t.status == "fail" for t in hidden), (function, [t.output for t in hidden])


def test_a_correct_file_in_another_style_gets_full_marks_in_child_processes():
    """dict caches, einsum, float64 inside, another mask expression: the second forward call, the
    same-seed check and the contract's cases accept any correct style."""
    from minigpt.coursework.grade import grade_file
    report = grade_file(HERE / "coursework_bugs" / "other_style.py")
    assert report.score == pytest.approx(FULL), report.table()


def test_a_pair_that_passes_its_cases_but_breaks_the_model_is_named_and_the_rest_keep_their_share(tmp_path):
    old = "    return dout * slope\n"
    path = bug_file(tmp_path, old, "    return dout * slope * (1.5 if x.shape[-1] == 48 else 1.0)\n")
    report = grade_here(path)                                # the model's MLP is 4 * 12 = 48 wide
    points, _, status, why = report.functions()["model"]
    assert losers(report) == {"model"} and status == "fail", report.table()
    assert points == pytest.approx(POINTS["model"] * 6 / 7)
    assert "your gelu pair breaks the model alone (" in why and "(no share for gelu)" in why
    assert report.exit_status() == 1


CONSISTENT = {   # a forward bug whose backward is the exact gradient of that forward, or is right for its cache
    "cross-entropy divided by every position, forward and backward": (
        [("    count = max(int(counted.sum()), 1)\n", "    count = len(t)\n")],
        "cross_entropy_forward", "3-D logits, one ignored target: loss (): relative error"),
    "layernorm with the unbiased variance, forward and backward": (
        [("(centred * centred).mean(axis=-1, keepdims=True)", "(centred * centred).sum(axis=-1, keepdims=True) / "
          "(x.shape[-1] - 1)"), ("- xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))",
                                 "- xhat * (dxhat * xhat).sum(axis=-1, keepdims=True) / (C - 1))")],
        "layernorm_forward", "3-D input: out (2, 5, 8): relative error"),
    "attention heads merged without the transpose (the cache is right)": (
        [("    y = y.transpose(0, 2, 1, 3).reshape(B, T, C)\n", "    y = y.reshape(B, T, C)\n")],
        "attention_forward", "2 heads: out (2, 5, 8): relative error"),
    "attention's dropout mask from np.random (the cache holds the mask it used)": (
        [("(rng.random(att.shape) >= p_drop)", "(np.random.random(att.shape) >= p_drop)")],
        "attention_forward", "same seed it drew a different mask"),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("bug", list(CONSISTENT))
def test_a_backward_right_for_its_own_forward_keeps_its_marks_on_every_case(bug, tmp_path):
    """Also on the cases of large values (logits x1000, rows of mean 1e6: differences measured
    against a tolerance from their error on minigpt's forward) and on attention's dropout case
    (minigpt's gradient for the mask the student's forward drew)."""
    edits, forward, says = CONSISTENT[bug]
    source = SOLUTION_TEXT
    for old, new in edits:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    path = tmp_path / "student_layers.py"
    path.write_text(source)
    report = grade_here(path)
    assert losers(report) == {forward, "model"}, report.table()
    assert says in report.functions()[forward][3]


def test_hidden_cases_decide_nothing_students_see_before_release(tmp_path):
    """A LayerNorm that clamps eps passes every visible case and fails a hidden one: the visible
    model test still swaps it in, and the always-visible output gives the visible points only."""
    path = bug_file(tmp_path, "keepdims=True) + eps)", "keepdims=True) + min(eps, 0.01))")
    cases = tmp_path / "hidden.json"
    cases.write_text(json.dumps([{"layer": "layernorm", "name": "eps 0.1", "eps": 0.1, "scale": 0.3,
                                  "shape": [4, 7], "bias": False}]))
    report = grade_here(path, extra_cases=read_extra_cases(cases))
    hidden = [t for t in report.tests if t.hidden and t.function == "layernorm_forward"]
    assert hidden[0].status == "fail" and "(hint: use the eps argument" in hidden[0].output, hidden[0].output
    assert [t.score for t in report.tests if t.function == "model"] == [POINTS["model"]], report.table()
    data = report.results_json()
    shown = [t for t in data["tests"] if "visibility" not in t]
    assert all(t["score"] == t["max_score"] for t in shown)
    points = sum(t["max_score"] for t in shown)
    assert data["output"].startswith(f"{points:.1f} of {points:.1f} points on the tests shown now; 2 tests of "
                                     "hidden cases count too"), data["output"]
    assert f"{report.score:.1f}" not in data["output"]
