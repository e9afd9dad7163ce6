"""Learning in context: the per-position loss, the few-shot scoring and the look-back head."""
import numpy as np
import pytest

from minigpt import incontext, task
from minigpt.incontext import accuracy_by_k, induction_targets, loss_by_position, next_token_right, pairs_shown
from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import CharTokenizer


def test_loss_by_position_averages_to_the_models_own_loss():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16), seed=1)
    ids = np.random.default_rng(0).integers(0, 11, size=200)
    curve = loss_by_position(model, ids, 5, seed=3, batch=2)
    starts = np.random.default_rng(3).integers(0, len(ids) - 9, size=5)      # the same windows
    rows = np.stack([ids[s:s + 9] for s in starts])
    _, loss, _ = model.forward(rows[:, :-1], rows[:, 1:])
    assert curve.shape == (8,) and curve.mean() == pytest.approx(float(loss), rel=1e-5)


def test_pairs_shown_and_the_look_back_targets_hand_checked():
    assert pairs_shown("cF aB cF eD a") == (4, True)
    assert pairs_shown("cF aB d") == (2, False)
    assert pairs_shown("a") == (0, False)
    #                   0123456789012
    assert induction_targets("cF aB cF eD a") == [4]
    assert induction_targets("cF aB cF eD c") == [1, 7]
    assert induction_targets("cF aB d") == []


def test_look_back_targets_of_repeated_pairs_are_the_substitutes_only():
    assert pairs_shown("cFc aBa cFc eDe a") == (4, True)
    #                   01234567890123456
    assert induction_targets("cFc aBa cFc eDe c") == [1, 9]      # not the spaces at 3 and 11
    assert induction_targets("cFc aBa cFc eDe a") == [5]


def _examples(rows):
    pairs = [(i + 1, p, c) for i, (p, c) in enumerate(rows)]
    tok = CharTokenizer(task.task_text(pairs))
    return task.encode_examples(pairs, tok), tok


def test_next_token_right_in_one_padded_batch_matches_each_prompt_alone():
    ex, tok = _examples([("cF aB a", "B"), ("fD a", "C"), ("bE cA aC eF dB c", "A")])
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=20, n_layer=1, n_head=2, n_embd=16), seed=0)
    alone = []
    for i in range(len(ex)):
        p = ex.ids[i][:ex.n_prompt[i]]
        alone.append(int(model.forward(p[None, :])[0][0, -1].argmax()) == ex.ids[i][ex.n_prompt[i]])
    assert next_token_right(model, ex).tolist() == alone


def test_accuracy_by_k_groups_by_the_pairs_shown():
    ex, _ = _examples([("cF a", "B"), ("cF c", "F"), ("a", "E"), ("dA bB b", "B")])
    by_k = accuracy_by_k(ex, [False, True, True, True])
    assert by_k == {0: (1.0, 0.0, 1), 1: (0.5, 0.5, 2), 2: (1.0, 1.0, 1)}


def test_positions_command_writes_the_figure_and_refuses_a_missing_checkpoint(tmp_path, capsys):
    from minigpt.checkpoint import save_checkpoint
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question. " * 40)
    tok = CharTokenizer(text.read_text())
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16), seed=0)
    save_checkpoint(tmp_path / "c.npz", model, tokenizer=tok)
    out = tmp_path / "p.png"
    assert incontext.main(["positions", "--ckpt", str(tmp_path / "c.npz"), "--text", str(text),
                           "--windows", "4", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and "position: 0:" in capsys.readouterr().out
    assert incontext.main(["positions", "--ckpt", str(tmp_path / "none.npz"), "--text", str(text)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_fewshot_command_trains_scores_by_k_and_draws_the_head(tmp_path, capsys):
    rows = "".join(f'{{"prompt": "aB cD {q}", "completion": "{a}"}}\n' for q, a in [("a", "B"), ("c", "D")] * 10)
    (tmp_path / "f.jsonl").write_text(rows)
    assert incontext.main(["fewshot", str(tmp_path / "f.jsonl"), "--steps", "3", "--n-embd", "16",
                           "--out-dir", str(tmp_path / "o"), "--save", str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert "k= 2: accuracy" in out and "look-back head: layer" in out
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"fewshot_accuracy.png", "induction_head.png"}
    assert (tmp_path / "m.npz").exists()


def test_the_commands_refuse_bad_values_in_one_line(tmp_path, capsys):
    assert incontext.main(["positions", "--windows", "0"]) == 2
    assert incontext.main(["fewshot", "x.jsonl", "--steps", "0"]) == 2
    assert incontext.main(["fewshot", str(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err.count("\n") == 3
