"""The baselines beside a task's score: trivial answers, hand-checked, and the command."""
import json
from pathlib import Path

import pytest

from minigpt import task_baselines
from minigpt.data import split
from minigpt.task import read_examples
from minigpt.task_baselines import score, trivial_answers


def test_trivial_answers_hand_checked():
    prompts = ["Al is in Rome. Bo is in Oslo. Where is Bo? ", "four at dawn, gale at noon. Title: "]
    got = trivial_answers(["Oslo", "Rome", "Oslo", "gale at noon"], prompts)
    assert got["most frequent answer"] == ["Oslo", "Oslo"]
    assert got["lead-1 (first clause)"] == ["Al is in Rome", "four at dawn"]
    assert got["first answer-like word"] == ["Rome", ""]     # the first fact's place; no one-word answer


def test_score_counts_exact_match_and_the_metric():
    s = score("rouge_l", ["p", "p"], ["gale at noon", "storm at eve"], ["gale at noon", "gale at noon"])
    assert s == {"exact_match": 0.5, "rouge_l": (1 + 1 / 3) / 2}


def _write(path, rows):
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in rows))
    return path


def test_the_command_prints_each_baseline(tmp_path, capsys):
    rows = [(f"{a} is in {b}. Where is {a}? ", b) for a in ("Al", "Bo", "Cy") for b in ("Rome", "Oslo", "Lima")]
    assert task_baselines.main([str(_write(tmp_path / "qa.jsonl", rows * 2))]) == 0
    out = capsys.readouterr().out
    assert "most frequent answer" in out and "first answer-like word" in out and "100.0%" in out


def test_the_command_refuses_a_bad_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n')
    assert task_baselines.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.jsonl:1" in err
    assert task_baselines.main([str(_write(tmp_path / "c.jsonl", [("x: ", "1+1"), ("y: ", "II")])),
                                "--task-metric", "value"]) == 2
    assert "c.jsonl:2" in capsys.readouterr().err


DATA = Path(__file__).resolve().parents[1] / "notebooks" / "data"
# Each line of the few-shot file draws its own substitution and asks about it, so a short
# prompt (k = 0, "b") recurs by chance with another answer: nothing there to remember.
# It is scored by incontext.fewshot at each k, not by the held-out exact match of minigpt.train.
NEW_MAPPING_PER_LINE = {"letter_substitution.jsonl"}


@pytest.mark.parametrize("path", sorted(DATA.glob("*.jsonl")), ids=lambda p: p.name)
def test_no_held_out_prompt_of_a_shipped_task_is_a_training_prompt(path):
    """The held-out split tests the rule, not memory: none of its prompts was trained on."""
    if path.name in NEW_MAPPING_PER_LINE:
        pytest.skip("a new mapping in every line; scored by incontext.fewshot")
    train, held_out = split(read_examples(path))
    seen = {prompt for _, prompt, _ in train}
    repeated = [(n, prompt) for n, prompt, _ in held_out if prompt in seen]
    assert not repeated, f"{len(repeated)} of {len(held_out)} held-out prompts are training prompts: {repeated[:3]}"
