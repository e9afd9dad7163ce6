"""Task fine-tuning: examples read safely, the loss on the answer only, exact match, the end marker."""
import json
import re

import numpy as np
import pytest

from minigpt import data, sample, task
from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.layers import cross_entropy_backward, cross_entropy_forward
from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import BPETokenizer, CharTokenizer
from minigpt.train import main

COMMON = ["--batch-size", "4", "--eval-iters", "2", "--eval-examples", "3", "--sample-tokens", "10",
          "--max-time", "0"]
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "32", *COMMON]
PAIRS = [{"prompt": f"{w}: ", "completion": r} for w, r in
         [("one", "I"), ("two", "II"), ("three", "III"), ("four", "IV"), ("five", "V"),
          ("six", "VI"), ("seven", "VII"), ("eight", "VIII"), ("nine", "IX"), ("ten", "X")]]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def run_train(path, out, *flags):
    return main([str(path), "--out-dir", str(out), *TINY, *flags])


def tiny_examples(tokenizer=None, pairs=PAIRS):
    rows = [(i + 1, p["prompt"], p["completion"]) for i, p in enumerate(pairs)]
    tokenizer = tokenizer or CharTokenizer.train(task.task_text(rows))
    return task.encode_examples(rows, tokenizer), tokenizer

# ---------------------------------------------------------------- tokens, mask and padding


def test_an_example_is_prompt_then_completion_then_the_end_marker():
    examples, tok = tiny_examples()
    assert tok.decode(examples.ids[3]) == "four: IV\n"
    assert examples.n_prompt[3] == len("four: ") and examples.end_id == tok.encode("\n")[0]


def test_gpt2_tokenizer_ends_each_example_with_endoftext():
    examples, tok = tiny_examples(BPETokenizer.from_gpt2())
    assert all(s[-1] == 50256 for s in examples.ids)
    assert tok.decode(examples.ids[0]) == "one: I<|endoftext|>"


def test_targets_are_minus_one_on_the_prompt_and_padding_and_the_answer_elsewhere():
    examples, tok = tiny_examples()
    x, y = task.pad_batch([examples.ids[3], examples.ids[0]], examples.n_prompt[[3, 0]])
    assert x.shape == y.shape == (2, len("four: IV\n") - 1)
    assert tok.decode(y[0][y[0] >= 0]) == "IV\n" and tok.decode(y[1][y[1] >= 0]) == "I\n"
    assert (y[0][:len("four: ") - 1] == -1).all() and (y[1][len("one: I\n") - 1:] == -1).all()
    _, y_all = task.pad_batch([examples.ids[3]], examples.n_prompt[[3]], prompt_loss=True)
    assert tok.decode(y_all[0]) == "our: IV\n"


def test_the_gradient_on_prompt_and_padding_logits_is_exactly_zero():
    examples, _ = tiny_examples()
    x, y = task.pad_batch(examples.ids[:6], examples.n_prompt[:6])
    model = GPT(GPTConfig(vocab_size=30, block_size=32, n_layer=1, n_head=2, n_embd=16), seed=1)
    logits, _, _ = model.forward(x)
    loss, cache = cross_entropy_forward(logits, y)
    dlogits = cross_entropy_backward(1.0, cache)
    assert np.all(dlogits[y == -1] == 0.0)
    assert np.all(np.abs(dlogits[y != -1]).sum(axis=-1) > 0)     # the answer is trained on
    # and the loss is the mean over the answer tokens only
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    rows, cols = np.nonzero(y != -1)
    assert np.isclose(float(loss), -logp[rows, cols, y[rows, cols]].mean(), rtol=1e-5)


def test_a_padded_row_gives_the_logits_of_the_example_alone():
    examples, _ = tiny_examples()
    model = GPT(GPTConfig(vocab_size=30, block_size=32, n_layer=2, n_head=2, n_embd=16), seed=2)
    x, _ = task.pad_batch([examples.ids[0], examples.ids[7]], examples.n_prompt[[0, 7]])
    alone = examples.ids[0][None, :-1]
    padded, _, _ = model.forward(x)
    np.testing.assert_allclose(padded[0, :alone.shape[1]], model.forward(alone)[0][0], rtol=1e-5, atol=1e-6)


def test_the_split_is_by_examples_and_batches_come_from_one_side():
    examples, _ = tiny_examples()
    train, val = data.split(examples)
    assert (len(train), len(val)) == (9, 1) and val.completions == ["X"]
    x, y = data.get_batch(val, 5, 32, np.random.default_rng(0))
    assert (x == x[0]).all() and x.shape[0] == 5

# ---------------------------------------------------------------- the end marker and exact match


def scripted(scripts):
    """A stand-in for sample.generate_tokens that emits a fixed answer per prompt (as text)."""
    def generate_tokens(model, idx, n, temperature=1.0):
        rows = [scripts[tuple(r)] for r in idx.tolist()]
        for step in range(n):
            yield np.array([r[step] if step < len(r) else r[-1] for r in rows])
    return generate_tokens


def test_exact_match_on_a_hand_made_case(monkeypatch):
    pairs = [{"prompt": "one: ", "completion": "I"}, {"prompt": "two: ", "completion": "II"},
             {"prompt": "nine: ", "completion": "IX"}, {"prompt": "ten: ", "completion": "X"}]
    examples, tok = tiny_examples(CharTokenizer("abcdefghijklmnopqrstuvwxyz: IVX\n"), pairs)
    answers = ["I\nXX", "III\n", "IX", "X\nI"]        # right, wrong, never ended, right
    scripts = {tuple(tok.encode(p["prompt"])): tok.encode(a) for p, a in zip(pairs, answers)}
    monkeypatch.setattr(task, "generate_tokens", scripted(scripts))
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8))
    accuracy, results = task.exact_match(model, examples, None, tok)
    assert accuracy == 0.5
    assert [r[2:] for r in results] == [("I", True), ("III", False), (None, False), ("X", True)]
    assert task.exact_match(model, examples, 2, tok)[0] == 0.5 and len(task.exact_match(model, examples, 2, tok)[1]) == 2


def always(model, token_id):
    """Make model's greedy choice token_id at every position (the head reads only ln_f's bias)."""
    model.params["ln_f.weight"][:] = 0.0
    model.params["ln_f.bias"][:] = 50.0 * model.params["wte.weight"][token_id]
    return model


def test_greedy_generation_stops_at_the_end_marker():
    tok = CharTokenizer("ab\n")
    model = GPT(GPTConfig(vocab_size=3, block_size=8, n_layer=1, n_head=1, n_embd=32), seed=0)
    assert task.greedy_answers(always(model, tok.stoi["\n"]), [[0], [0, 1, 0]], tok.stoi["\n"]) == [[], []]
    assert task.greedy_answers(always(model, tok.stoi["b"]), [[0]], tok.stoi["\n"]) == [None]


def test_sample_cli_stops_at_a_task_models_end_marker(tmp_path, capsys):
    tok = CharTokenizer("ab\n")
    model = always(GPT(GPTConfig(vocab_size=3, block_size=8, n_layer=1, n_head=1, n_embd=32)), tok.stoi["\n"])
    save_checkpoint(tmp_path / "task.npz", model, tokenizer=tok, train_args={"end_marker": "\n"})
    save_checkpoint(tmp_path / "text.npz", model, tokenizer=tok, train_args={})
    flags = ["--prompt", "ab", "--greedy", "--max-new-tokens", "5"]
    assert sample.main(["--ckpt", str(tmp_path / "task.npz"), *flags]) == 0
    assert capsys.readouterr().out == "ab\n"
    for argv in (["--ckpt", str(tmp_path / "task.npz"), "--ignore-eot"], ["--ckpt", str(tmp_path / "text.npz")]):
        assert sample.main(argv + flags) == 0
        assert capsys.readouterr().out == "ab" + "\n" * 5 + "\n"

# ---------------------------------------------------------------- the training command


def test_training_on_a_task_scores_exact_match_and_records_the_end_marker(tmp_path, capsys):
    path = write_jsonl(tmp_path / "task.jsonl", PAIRS * 3)
    assert run_train(path, tmp_path / "out", "--max-iters", "6", "--eval-interval", "3") == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [3, 6]
    assert all(0 <= r["exact_match"] <= 1 and r["eval_examples"] == 3 for r in records)
    out = capsys.readouterr().out
    assert "27 to train on, the last 3 held out" in out and "exact match" in out and "'\\n'" in out
    ck = load_checkpoint(tmp_path / "out" / "ckpt.npz")
    assert ck["train_args"]["end_marker"] == "\n" and set(ck["tokenizer"].chars) == set("".join(
        p["prompt"] + p["completion"] for p in PAIRS) + "\n")


def test_init_from_a_char_model_adds_missing_characters_and_keeps_the_old_rows(tmp_path, capsys):
    old = CharTokenizer("abc\n")
    model = GPT(GPTConfig(vocab_size=4, block_size=32, n_layer=1, n_head=2, n_embd=16), seed=3)
    save_checkpoint(tmp_path / "pre.npz", model, tokenizer=old)
    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "ab", "completion": "c9"}] * 4)
    grown = task.add_characters(GPT(model.config, params=dict(model.params)), old, ["9"])
    np.testing.assert_array_equal(grown.decode(grown.encode("abc9")), "abc9")
    assert run_train(path, tmp_path / "out", "--init-from", str(tmp_path / "pre.npz"), "--max-iters", "1",
                     "--lr", "1e-9", "--min-lr", "0", "--weight-decay", "0") == 0
    assert "added 1 characters" in capsys.readouterr().out
    ck = load_checkpoint(tmp_path / "out" / "ckpt.npz")
    wte, new_tok = ck["model"].params["wte.weight"], ck["tokenizer"]
    for ch in "abc\n":
        np.testing.assert_allclose(wte[new_tok.stoi[ch]], model.params["wte.weight"][old.stoi[ch]], atol=1e-6)


def bad(text):
    return lambda p: p.write_text(text, encoding="utf-8")


GOOD = json.dumps(PAIRS[0]) + "\n"


@pytest.mark.parametrize("make, message", [
    (bad(GOOD + "{not json\n"), r"task\.jsonl:2: not JSON"),
    (bad(GOOD + "[1, 2]\n"), r"task\.jsonl:2: a JSON list, not an object"),
    (bad(GOOD + '{"prompt": "a", "completion": "b", "x": ' + "[" * 50000 + "]" * 50000 + "}\n"),
     r"task\.jsonl:2: JSON nested more than 100 levels deep"),
    (bad(GOOD + "\n" + '{"completion": "I"}\n'), r'task\.jsonl:3: no "prompt"'),
    (bad(GOOD + '{"prompt": "one: "}\n'), r'task\.jsonl:2: no "completion"'),
    (bad(GOOD + '{"prompt": 1, "completion": "I"}\n'), r'task\.jsonl:2: "prompt" is a int, not a string'),
    (bad(GOOD + '{"prompt": "a", "completion": null}\n'), r'task\.jsonl:2: "completion" is a NoneType'),
    (bad(GOOD + '{"prompt": "", "completion": "I"}\n'), r"task\.jsonl:2: the prompt is empty"),
    (bad(GOOD * 3 + '{"prompt": "one: ", "completion": "I\\nII"}\n'),
     r"task\.jsonl:4: the completion contains the end marker '\\n'"),
    (bad(""), r"task\.jsonl is empty"),
    (bad("\n\n"), r"task\.jsonl holds 0 examples"),
    (bad(GOOD), r"task\.jsonl holds 1 example: it needs at least 2, so that one is left for validation"),
    (bad(GOOD * 3 + json.dumps({"prompt": "x" * 40, "completion": "I"}) + "\n" * 2
         + json.dumps({"prompt": "y" * 50, "completion": "I"}) + "\n"),
     r"task\.jsonl: 2 examples \(the first on line 4\) are longer than the block size 32 "
     r"\(the longest needs 51\): give --block-size 51 to fit them"),
])
def test_bad_task_files_end_in_one_line_and_exit_2(tmp_path, capsys, make, message):
    make(tmp_path / "task.jsonl")
    assert run_train(tmp_path / "task.jsonl", tmp_path / "out", "--max-iters", "1") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err


def test_a_gpt2_completion_with_endoftext_is_refused_with_its_line():
    rows = [(1, "a", "b"), (2, "q", "x<|endoftext|>y")]
    with pytest.raises(data.DataError, match=r"t\.jsonl:2: the completion contains the end marker '<\|endoftext\|>'"):
        task.encode_examples(rows, BPETokenizer.from_gpt2(), "t.jsonl")


def test_an_over_long_example_from_a_checkpoint_names_the_checkpoint(tmp_path, capsys):
    model = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(tmp_path / "pre.npz", model, tokenizer=CharTokenizer("abcdefghijklmnopqrstuvwxyz: IVX\n"))
    path = write_jsonl(tmp_path / "t.jsonl", PAIRS + [{"prompt": "seventeen: ", "completion": "XVII"}])
    assert main([str(path), "--out-dir", str(tmp_path / "o"), *COMMON, "--init-from", str(tmp_path / "pre.npz"),
                 "--max-iters", "1"]) == 2
    err = capsys.readouterr().err
    assert "longer than the block size 8" in err and "fixed by" in err and "pre.npz: shorten them" in err


def test_a_resumed_task_run_equals_an_uninterrupted_one(tmp_path):
    path = write_jsonl(tmp_path / "task.jsonl", PAIRS * 3)
    flags = ["--eval-interval", "2", "--sample-tokens", "0"]
    assert run_train(path, tmp_path / "a", "--max-iters", "4", *flags) == 0
    assert run_train(path, tmp_path / "b", "--max-iters", "2", *flags) == 0
    assert run_train(path, tmp_path / "b", "--max-iters", "4", "--resume", *flags) == 0
    a, b = (load_checkpoint(tmp_path / d / "ckpt.npz")["model"].params for d in "ab")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_format_answers_writes_what_its_docstring_says():
    results = [("x: ", "II", "II", True), ("y: ", "IV", "VI", False), ("z: ", "V", None, False)]
    assert task.format_answers(results, 3) == ["'x: ' -> 'II' right", "'y: ' -> 'VI' wrong, expected 'IV'",
                                               "'z: ' -> (no end marker) wrong, expected 'V'"]
    assert len(task.format_answers(results, 2)) == 2
