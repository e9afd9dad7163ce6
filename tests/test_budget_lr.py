"""The learning rate under a time budget: a resumed run, or a plan that drops, never raises it
and lets it decay to --min-lr from where it had got (tiny model, seconds each)."""
import json
from pathlib import Path

import pytest

from minigpt.checkpoint import load_checkpoint
from minigpt.optim import relaid_lr
from minigpt.train import main

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "notebooks" / "data" / "sea_forecasts.txt"
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "2", "--sample-tokens", "0", "--log-interval", "1", "--warmup-iters", "10"]


def test_relaid_cosine_starts_where_it_got_and_ends_at_min_lr():
    assert relaid_lr(50, 50, 1e-3, 1e-4, float("inf")) == 1e-3            # no plan yet: held
    lrs = [relaid_lr(i, 50, 1e-3, 1e-4, 150) for i in range(50, 160)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[100] == 1e-4 and lrs[-1] == 1e-4
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))                      # only down
    assert relaid_lr(60, 50, 5e-5, 1e-4, 150) == 5e-5                      # never above where it got


def test_budgeted_resume_never_raises_the_lr(tmp_path, capsys):
    assert main([str(TEXT), "--out-dir", str(tmp_path), *TINY, "--max-time", "0.1"]) == 0
    ck = load_checkpoint(tmp_path / "ckpt.npz")
    first = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    reached = first[-1]["lr"]
    assert ck["train_args"]["lr_reached"] == pytest.approx(reached)
    assert main([str(TEXT), "--resume", "--out-dir", str(tmp_path), "--max-time", "0.1", "--log-interval", "1"]) == 0
    resumed = [r for r in map(json.loads, open(tmp_path / "log.jsonl")) if r["iter"] > ck["iter_num"]]
    assert resumed and max(r["lr"] for r in resumed) <= reached * (1 + 1e-9)


def test_a_plan_that_drops_re_lays_the_cosine_from_the_lr_reached(tmp_path, monkeypatch, capsys):
    """A machine that slowed down: the plan falls from thousands to 30 more steps at iter 20.
    The lr goes on from where it was down to --min-lr at the new end (no jump to a cosine's
    tail, no stop at a high lr)."""
    from minigpt import plan
    real, dropped = plan.refitted_total, []

    def refit(run, budget, total):
        if run.it >= 20 and not dropped:
            dropped.append(run.it)
            return run.it + 30
        return total if dropped else real(run, budget, total)

    monkeypatch.setattr(plan, "refitted_total", refit)
    assert main([str(TEXT), "--out-dir", str(tmp_path), *TINY, "--max-time", "0.2", "--log-interval", "5"]) == 0
    log = {r["iter"]: r["lr"] for r in map(json.loads, open(tmp_path / "log.jsonl"))}
    at = dropped[0]
    after = [log[i] for i in sorted(log) if i > at]
    assert max(log) == at + 30 and after[-1] == pytest.approx(2e-4, rel=0.05)   # the new end: --min-lr
    assert after[0] > 0.9 * log[at] and all(a >= b for a, b in zip(after, after[1:]))


def test_a_run_stopped_by_the_budget_between_log_lines_shows_the_plan_and_says_so(tmp_path, monkeypatch, capsys):
    from minigpt import plan
    monkeypatch.setattr(plan, "another_fits", lambda run, budget: run.it < 13)
    assert main([str(TEXT), "--out-dir", str(tmp_path), *TINY, "--max-time", "0.2", "--log-interval", "5"]) == 0
    out = capsys.readouterr().out
    last = [line for line in out.splitlines() if line.startswith("iter ")][-1]
    planned = int(last.split("/")[1].split()[0])
    assert last.startswith("iter    13/") and planned > 13
    assert f"stopped by the time budget at iter 13 of the planned {planned}" in out
    assert "of training (start-up and evals included, the final sample not)" in out     # what the time is


def test_the_eval_schedule_is_looked_at_between_log_lines_when_the_plan_is_short(tmp_path, capsys):
    """40 steps, log lines every 100: each tenth still gets its eval (the docs' claim)."""
    assert main([str(TEXT), "--out-dir", str(tmp_path), *TINY, "--max-time", "0", "--max-iters", "40",
                 "--log-interval", "100"]) == 0
    evals = [json.loads(line)["iter"] for line in open(tmp_path / "metrics.jsonl")]
    assert evals == [0, 4, 8, 12, 16, 20, 24, 28, 32, 40]


def test_the_final_sample_is_reserved_from_a_timed_sample_not_a_guess(monkeypatch):
    """A machine where a sampled token takes 20 ms: the budget keeps 400 * 20 ms for the final
    sample (it kept 400 * 5 ms, a guess, and the sample ran past the deadline)."""
    import time
    from types import SimpleNamespace

    import numpy as np

    from minigpt import plan, sample
    from minigpt.dist import Solo
    from minigpt.model import GPT, GPTConfig
    from minigpt.progress import EvalSchedule, TimeBudget
    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=16), seed=0)
    args = SimpleNamespace(seed=0, batch_size=4, block_size=16, grad_accum=1, eval_iters=2, max_time=1.0,
                           sample_tokens=400, file="notes.txt")
    run = SimpleNamespace(args=args, xp=np, model=model, comm=Solo(), train_tokens=np.arange(400) % 40,
                          tokenizer=SimpleNamespace(vocab_size=40))
    monkeypatch.setattr(sample, "generate", lambda model, idx, n, **k: time.sleep(0.02 * n))
    budget = TimeBudget(time.perf_counter() + 60, None, 2, 1, 400, schedule=EvalSchedule())
    plan.check_budget_holds(run, budget)
    assert 0.02 <= budget.sample_s_per_token < 0.04
    assert budget.reserve() >= 400 * 0.02


def test_a_damaged_lr_reached_is_one_line_and_exit_2(tmp_path, capsys):
    import numpy as np
    assert main([str(TEXT), "--out-dir", str(tmp_path), *TINY, "--max-time", "0", "--max-iters", "12"]) == 0
    ckpt = tmp_path / "ckpt.npz"
    with np.load(ckpt) as a:
        arrays = {k: a[k] for k in a.files}
    meta = json.loads(arrays["meta"].tobytes())
    assert meta["train_args"]["lr_reached"] > 0                  # past the warm-up of 10: saved
    meta["train_args"]["lr_reached"] = "fast"
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(ckpt, "wb") as f:
        np.savez(f, **arrays)
    capsys.readouterr()
    assert main([str(TEXT), "--resume", "--out-dir", str(tmp_path), "--max-iters", "14"]) == 2
    err = capsys.readouterr().err
    assert "train_args.lr_reached" in err and len(err.strip().splitlines()) == 1, err
