"""Task scores: the arithmetic evaluator (and what it refuses), ROUGE-L, the metric records."""
import json

import pytest

from minigpt import train
from minigpt.data import DataError
from minigpt.task_metrics import (NotArithmetic, arithmetic, check_references, lcs_length, rouge_l,
                                  scores, value_match)


@pytest.mark.parametrize("text, value", [
    ("1+4+9+16+25", 55),
    ("sum(i*i for i in range(1, 6))", 55),
    ("sum(i*i for i in range(1, 5+1))", 55),
    ("sum(range(3, 7+1))", 25),
    ("2*7+3", 17), ("7-10", -3), ("-(2**3)", -8), ("17//5", 3), ("17%5", 2),
    ("max(4, 9)", 9), ("min([4, 9, 2])", 2), ("abs(-4)", 4), ("len(range(10))", 10),
    ("sum(i for i in range(10) if i % 2 == 0)", 20),
    (" 3 * 4 ", 12),
])
def test_arithmetic_gives_the_value_python_would(text, value):
    assert arithmetic(text) == value


@pytest.mark.parametrize("text", [
    '__import__("os").system("true")',       # a call of anything but the arithmetic few
    "(1).real", "(2).__class__",              # attribute access
    "open('x')", "print(1)", "eval('1')",
    "x + 1",                                  # a name it did not bind
    "lambda: 1", "[i for i in ()]", '"a" * 3', "1.5 + 1", "True + 1",
    "9**99", "2**-1", "2**10**10",            # exponents outside 0..64
    "99999999999999999999999999999999**2*99999999999999999999999999999999**2",   # too many digits
    "sum(range(10**9))",                      # a range too long to walk
    "sum(range(10**20))", "len(range(10**20))", "max(range(-10**30, 10**30))",   # len() past a machine int
    "sum(i*j for i in range(9999) for j in range(9999))",   # two loops
    "1//0", "5%0", "max([])", "range(5)", "sum(1, 2)", "sum(range(1, 5), start=2)",
    "1 +", "", "(" * 200 + "1" + ")" * 200, "1" * 400,
])
def test_arithmetic_refuses_everything_else(text):
    with pytest.raises(NotArithmetic):
        arithmetic(text)


def test_arithmetic_counts_its_steps():
    with pytest.raises(NotArithmetic, match="steps"):       # 9999 x 9999 nested sums
        arithmetic("sum(sum(range(9999)) for i in range(9999))")


def test_value_match_accepts_any_expression_with_the_value():
    assert value_match("1+4+9+16+25", "sum(i*i for i in range(1, 6))")
    assert not value_match("1+4+9+16", "sum(i*i for i in range(1, 6))")
    assert not value_match(None, "1")
    assert not value_match("__import__('os')", "1")         # refused is wrong, never an error


def test_lcs_and_rouge_l_hand_checked():
    assert lcs_length("ABCBDAB", "BDCABA") == 4              # the textbook pair (BCBA)
    assert lcs_length([], [1]) == 0
    # answer 3 words, reference 4, LCS 3 (gale in gullrock): P 1, R 3/4, F1 6/7
    assert rouge_l("gale in Gullrock", "severe gale in Gullrock") == pytest.approx(6 / 7)
    # LCS 2 (gale, gullrock) of 3 and 4: P 2/3, R 1/2, F1 4/7
    assert rouge_l("gale at Gullrock", "severe gale in Gullrock") == pytest.approx(4 / 7)
    assert rouge_l("Gullrock gale", "gale Gullrock") == pytest.approx(0.5)   # order counts
    assert rouge_l("Severe gale, in Gullrock!", "severe gale in gullrock") == 1.0
    assert rouge_l("storm", "severe gale") == 0.0
    assert rouge_l(None, "severe gale") == 0.0
    assert rouge_l("", "severe gale") == 0.0


def test_scores_average_the_metric_over_the_answers():
    results = [("p", "2+2", "4", False), ("p", "2*3", "3+3", False), ("p", "5", "6", False),
               ("p", "1", None, False)]
    assert scores("value", results) == {"value_match": 0.5}
    assert scores("exact", results) == {}
    summaries = [("p", "gale in Gullrock", "gale in Gullrock", True), ("p", "gale in Gullrock", "x", False)]
    assert scores("rouge_l", summaries) == {"rouge_l": 0.5}


def test_value_metric_refuses_a_reference_it_cannot_score():
    check_references("value", ["1+1", "sum(range(3))"], [1, 2], "t.jsonl")
    check_references("exact", ["CCC"], [1], "t.jsonl")
    with pytest.raises(DataError, match=r"t.jsonl:7: .*'CCC'"):
        check_references("value", ["1+1", "CCC"], [3, 7], "t.jsonl")


def _task(tmp_path, rows):
    path = tmp_path / "task.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in rows))
    return path


TINY = ["--max-time", "0", "--max-iters", "2", "--eval-interval", "2", "--eval-iters", "1",
        "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--sample-tokens", "0"]


def test_train_records_the_task_metric_beside_exact_match(tmp_path):
    path = _task(tmp_path, [(f"{a} plus {b}: ", f"{a}+{b}") for a in range(1, 5) for b in range(1, 5)])
    assert train.main([str(path), "--out-dir", str(tmp_path / "o"), "--task-metric", "value", *TINY]) == 0
    record = json.loads((tmp_path / "o" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"exact_match", "value_match"} <= set(record) and 0 <= record["value_match"] <= 1


def test_train_with_an_unscorable_reference_stops_with_one_line(tmp_path, capsys):
    path = _task(tmp_path, [("one: ", "1"), ("two: ", "II"), ("three: ", "3")])
    assert train.main([str(path), "--out-dir", str(tmp_path / "o"), "--task-metric", "value", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task.jsonl:2:" in err and "--task-metric value" in err


def test_task_metric_on_a_text_file_is_refused(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("hello world " * 50)
    assert train.main([str(text), "--out-dir", str(tmp_path / "o"), "--task-metric", "rouge_l", *TINY]) == 2
    assert "--task-metric rouge_l" in capsys.readouterr().err
