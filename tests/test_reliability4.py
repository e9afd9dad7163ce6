"""Bad input, fourth round: a start-up timing caught by the scheduler, a hard-linked lock, a bad
input found after the out-dir was claimed, a checkpoint without its text's SHA-256, a signal
during a long final sample, and the messages of dangling out-dirs, spent budgets and huge numbers."""
import json
import os
import signal
import time
from types import SimpleNamespace

import numpy as np
import pytest

from minigpt import data, fileio, plan, sample as sample_module
from minigpt.checkpoint import load_checkpoint
from minigpt.dist import Solo
from minigpt.model import GPT, GPTConfig
from minigpt.progress import TimeBudget
from minigpt.tokenizer import build_tokenizer
from minigpt.train import main

from tiny_cli import ROOT, TINY, corpus, one_line, train  # noqa: F401 (corpus: a fixture)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    assert train(corpus, out, "--max-iters", 10, "--eval-interval", 5) == 0
    return out


def _rewrite_train_args(src, dst, edit):
    with np.load(src) as a:
        arrays = {k: a[k] for k in a.files}
    meta = json.loads(arrays["meta"].tobytes())
    edit(meta["train_args"])
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(dst, **arrays)


# ---------------------------------------------------------------- the budget's start-up timing

def test_the_start_up_timing_is_not_fooled_by_one_call_the_scheduler_caught(monkeypatch):
    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=16), seed=0)
    run = SimpleNamespace(args=SimpleNamespace(seed=0, batch_size=4, block_size=16), xp=np, model=model,
                          comm=Solo(), train_tokens=np.arange(400) % 40)
    real, evals = model.forward, []

    def forward(x, y=None, train=False, **k):
        if not train:
            evals.append(1)
            if len(evals) == 2:                # one eval batch preempted for 0.3 s
                time.sleep(0.3)
        return real(x, y, train=train, **k)
    monkeypatch.setattr(model, "forward", forward)
    micro_s, eval_batch_s = plan._probe(run)
    assert eval_batch_s < 0.1 and eval_batch_s <= micro_s, (micro_s, eval_batch_s)


def test_a_budget_spent_by_start_up_alone_says_so_not_lower_grad_accum():
    budget = TimeBudget(time.perf_counter() - 1, 100, 2, 1, 0)
    why = plan.budget_verdict(SimpleNamespace(grad_accum=1, eval_iters=2, max_time=0.1), budget,
                              0.01, 0.01, time.perf_counter())
    assert "start-up alone" in why and "--grad-accum" not in why, why


# ---------------------------------------------------------------- the lock, hard-linked

def test_a_hard_linked_lock_is_refused_and_the_file_it_shares_untouched(corpus, tmp_path, capsys):
    victim, out = tmp_path / "victim.txt", tmp_path / "out"
    victim.write_text("PRECIOUS\n")
    out.mkdir()
    os.link(victim, out / fileio.LOCK_NAME)
    err = one_line(capsys, train(corpus, out, "--max-iters", 2))
    assert "hard link" in err and victim.read_text() == "PRECIOUS\n"
    assert not (out / "ckpt.npz").exists()


# ---------------------------------------------------------------- a bad input leaves nothing behind

def _bad_text(tmp_path, raw):
    path = tmp_path / "bad.txt"
    path.write_bytes(raw)
    return [str(path)]


def _bad_init(tmp_path, corpus):
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    return [str(corpus), "--init-from", str(tmp_path / "cut.npz")]


def _bad_pretrained(tmp_path, corpus):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text("")
    return [str(corpus), "--init-from-pretrained", str(tmp_path / "gpt2")]


@pytest.mark.parametrize("existing", [False, True], ids=["new-out-dir", "existing-out-dir"])
@pytest.mark.parametrize("case", ["empty", "latin1", "cut-init-from", "empty-gpt2-config"])
def test_an_existing_but_bad_input_leaves_no_new_out_dir_and_no_lock(corpus, tmp_path, capsys, case, existing):
    inputs = {"empty": lambda: _bad_text(tmp_path, b""),
              "latin1": lambda: _bad_text(tmp_path, "caf\xe9\n".encode("latin-1") * 50),
              "cut-init-from": lambda: _bad_init(tmp_path, corpus),
              "empty-gpt2-config": lambda: _bad_pretrained(tmp_path, corpus)}[case]()
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    one_line(capsys, main([*inputs, "--out-dir", str(out), *TINY, "--max-iters", "2"]))
    assert out.exists() == existing
    assert not existing or list(out.iterdir()) == []


def test_a_budget_refused_after_the_data_is_read_leaves_no_new_out_dir(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    one_line(capsys, train(corpus, out, "--max-time", "0.0001", "--eval-iters", 100000))
    assert not out.exists()


def test_a_failed_claim_keeps_a_lock_it_did_not_make(tmp_path):
    (tmp_path / fileio.LOCK_NAME).write_text("123\n")
    with pytest.raises(RuntimeError):
        with fileio.claim_dir(tmp_path):
            raise RuntimeError("bad input")
    assert (tmp_path / fileio.LOCK_NAME).exists()


def test_a_rank_other_than_0_never_writes_the_token_cache(corpus, tmp_path):
    make = lambda text: build_tokenizer("char", text, None)      # noqa: E731
    tokens, _, cached, _ = data.load_corpus(corpus, tmp_path / "c", make, {"kind": "char"}, write_cache=False)
    assert len(tokens) and not cached and not (tmp_path / "c").exists()


# ---------------------------------------------------------------- the text's SHA-256 in a checkpoint

@pytest.mark.parametrize("value", [None, 5, "ab" * 31, "x" * 64], ids=["absent", "int", "short", "not-hex"])
def test_a_checkpoint_without_a_valid_text_sha256_is_damaged_not_resumed(trained, corpus, tmp_path, capsys,
                                                                        value):
    out = tmp_path / "run"
    out.mkdir()
    edit = (lambda t: t.pop("text_sha256")) if value is None else (lambda t: t.update(text_sha256=value))
    _rewrite_train_args(trained / "ckpt.npz", out / "ckpt.npz", edit)
    err = one_line(capsys, main([str(corpus), "--out-dir", str(out), "--resume", "--max-iters", "12"]))
    assert "damaged checkpoint: train_args.text_sha256" in err, err
    assert load_checkpoint(out / "ckpt.npz")["iter_num"] == 10


def test_a_huge_number_in_train_args_is_cut_in_the_message(trained, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    _rewrite_train_args(trained / "ckpt.npz", out / "ckpt.npz", lambda t: t.update(warmup_iters=10**400))
    err = one_line(capsys, main([str(ROOT / "shakespeare.txt"), "--out-dir", str(out), "--resume"]))
    assert "damaged checkpoint: train_args" in err and len(err) < 300, err


# ---------------------------------------------------------------- a signal during the final sample

def test_a_sigterm_during_a_long_final_sample_stops_it_at_the_next_token(corpus, tmp_path, capsys, monkeypatch):
    real, calls = sample_module._next_logits, []

    def next_logits(*a):
        calls.append(1)
        if len(calls) == 110:                  # 100 for the eval's sample, then 10 of the final one
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a)
    monkeypatch.setattr(sample_module, "_next_logits", next_logits)
    status = train(corpus, tmp_path, "--max-iters", 4, "--eval-interval", 100, "--sample-tokens", 3000)
    err = one_line(capsys, status, 143)
    assert "after the final save" in err and len(calls) <= 111, len(calls)
    assert load_checkpoint(tmp_path / "ckpt.npz")["iter_num"] == 4


# ---------------------------------------------------------------- an out-dir that is a broken link

@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_an_out_dir_that_is_a_dangling_or_looping_link_is_named_so(corpus, tmp_path, capsys, kind):
    out = tmp_path / "la"
    if kind == "dangling":
        out.symlink_to(tmp_path / "nowhere")
    else:
        (tmp_path / "lb").symlink_to(out)
        out.symlink_to(tmp_path / "lb")
    err = one_line(capsys, train(corpus, out, "--max-iters", 2))
    assert "symbolic link that leads to no folder" in err and "is a file" not in err, err


# ---------------------------------------------------------------- a GPT-2 vocabulary with an extra entry

def test_a_gpt2_vocab_json_with_an_entry_no_merge_makes_is_refused_naming_it(tmp_path):
    from minigpt.bpe_gpt2 import GPT2_ASSETS
    from minigpt.tokenizer import BPETokenizer
    vocab = json.loads((GPT2_ASSETS / "encoder.json").read_text(encoding="utf-8"))
    vocab["NEWTOKEN"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(ValueError, match="'NEWTOKEN' is 50257, which nothing makes"):
        BPETokenizer.from_gpt2(tmp_path / "vocab.json", GPT2_ASSETS / "vocab.bpe")


def test_the_positions_figure_never_writes_into_a_file_a_hard_link_shares(tmp_path, capsys):
    from minigpt import incontext
    from minigpt.checkpoint import save_checkpoint
    from minigpt.tokenizer import CharTokenizer
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question. " * 40)
    tok = CharTokenizer(text.read_text())
    save_checkpoint(tmp_path / "c.npz", GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1,
                                                      n_head=2, n_embd=16), seed=0), tokenizer=tok)
    victim = tmp_path / "victim.txt"
    victim.write_text("PRECIOUS\n")
    os.link(victim, tmp_path / "p.png")
    assert incontext.main(["positions", "--ckpt", str(tmp_path / "c.npz"), "--text", str(text),
                           "--windows", "4", "--out", str(tmp_path / "p.png")]) == 0
    assert victim.read_text() == "PRECIOUS\n" and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
