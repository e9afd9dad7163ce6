"""Bad input, third round: signals on every path, the out-dir touched only after every input is
checked, no link followed, no FIFO waited on, .jsonl lines, duplicate keys, and numbers with ranges.
(The MPI cases are in test_dist.py.)"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from minigpt import fileio, run as run_module, train as train_module
from minigpt.checkpoint import load_checkpoint
from minigpt.progress import read_metrics
from minigpt.sample import main as sample_main
from minigpt.task import read_examples
from minigpt.train import main

from tiny_cli import ROOT, TINY, corpus, one_line, train  # noqa: F401 (corpus: a fixture)


@pytest.fixture
def trained(corpus, tmp_path):
    out = tmp_path / "run"
    assert train(corpus, out, "--max-iters", 10, "--eval-interval", 5) == 0
    return out


def fifo(path):
    """A FIFO at path, and a thread that opens it for writing after 10 s, so that a reader that
    waits on it (the bug) is released and the test fails instead of hanging."""
    os.mkfifo(path)

    def release():
        time.sleep(10)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
    threading.Thread(target=release, daemon=True).start()
    return path


# ---------------------------------------------------------------- signals, from start-up to exit

def _kill_self_on(monkeypatch, module, name, signum, call=1):
    """Make module.name send signum to this process on its call-th call, then go on."""
    real, calls = getattr(module, name), []

    def wrapper(*a, **k):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return real(*a, **k)
    monkeypatch.setattr(module, name, wrapper)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_during_the_final_eval_saves_the_run_and_exits_128_plus_it(corpus, tmp_path, capsys,
                                                                             monkeypatch, signum):
    _kill_self_on(monkeypatch, train_module, "estimate_loss", signum)     # the final eval's first split
    status = train(corpus, tmp_path, "--max-iters", 6, "--eval-interval", 100)
    err = capsys.readouterr().err
    assert status == 128 + signum and "Traceback" not in err, err
    assert f"interrupted at iter 6 ({signum.name}, during the final eval)" in err
    assert load_checkpoint(tmp_path / "ckpt.npz")["iter_num"] == 6
    monkeypatch.undo()
    assert train(corpus, tmp_path, "--resume", "--max-iters", 8) == 0


def test_a_signal_during_the_final_sample_exits_143_with_the_whole_run_saved(corpus, tmp_path, capsys,
                                                                            monkeypatch):
    _kill_self_on(monkeypatch, train_module, "sample_text", signal.SIGTERM, call=2)   # 1: the eval's
    status = train(corpus, tmp_path, "--max-iters", 6, "--eval-interval", 100)
    err = one_line(capsys, status, 143)
    assert "after the final save" in err and load_checkpoint(tmp_path / "ckpt.npz")["iter_num"] == 6


def test_a_signal_during_the_eval_at_step_0_saves_a_checkpoint_that_resume_continues(corpus, tmp_path, capsys,
                                                                                     monkeypatch):
    _kill_self_on(monkeypatch, train_module, "estimate_loss", signal.SIGTERM)    # the eval schedule's first
    status = train(corpus, tmp_path, "--max-iters", 6)                          # (no --eval-interval)
    err = capsys.readouterr().err
    assert status == 143 and "Traceback" not in err, err
    assert "interrupted at iter 0 (SIGTERM)" in err and load_checkpoint(tmp_path / "ckpt.npz")["iter_num"] == 0
    monkeypatch.undo()
    assert train(corpus, tmp_path, "--resume", "--max-iters", 6) == 0
    assert load_checkpoint(tmp_path / "ckpt.npz")["iter_num"] == 6


def test_a_sigterm_during_start_up_exits_143_not_130(corpus, tmp_path, capsys, monkeypatch):
    _kill_self_on(monkeypatch, run_module, "load_data", signal.SIGTERM)
    err = one_line(capsys, train(corpus, tmp_path, "--max-iters", 6), 143)
    assert "SIGTERM" in err and not (tmp_path / "ckpt.npz").exists()


# ---------------------------------------------------------------- inputs before the out-dir

def test_a_typo_in_the_input_with_overwrite_touches_none_of_the_last_runs_files(trained, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    assert {"metrics.jsonl", "log.jsonl", "loss.png", "ckpt.npz"} <= set(before)
    for extra in (["--overwrite"], []):              # without --overwrite: not "already exists" first
        status = main([str(tmp_path / "shakespear.txt"), "--out-dir", str(trained), *TINY, "--max-iters", "2",
                       *extra])
        err = one_line(capsys, status)
        assert "no such file" in err and "already exists" not in err, err
        assert {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("flag", ["--init-from", "--init-from-pretrained", "--resume"])
def test_a_missing_input_from_another_folder_creates_no_out_dir_and_no_lock(corpus, tmp_path, capsys,
                                                                           monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    extra = [flag] if flag == "--resume" else [flag, str(tmp_path / "absent")]
    one_line(capsys, main([str(corpus), *TINY, "--max-iters", "2", *extra]))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- links and FIFOs

@pytest.mark.parametrize("name", [fileio.LOCK_NAME, "ckpt.npz", "metrics.jsonl", "log.jsonl", "loss.png"])
def test_a_planted_symlink_in_the_out_dir_is_refused_and_its_target_untouched(corpus, tmp_path, capsys, name):
    victim = tmp_path / "someone_elses.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(victim)
    err = one_line(capsys, train(corpus, out, "--max-iters", 2, "--overwrite"))
    assert "symbolic link" in err and victim.read_text() == "precious\n"


def test_claim_dir_never_follows_a_lock_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / fileio.LOCK_NAME).symlink_to(victim)
    with pytest.raises(fileio.FileError, match="symbolic link"):
        with fileio.claim_dir(tmp_path / "out"):
            pass
    assert victim.read_text() == "keep"


@pytest.mark.parametrize("reader", ["open_regular", "file_digest"])
def test_every_regular_file_reader_refuses_a_fifo_at_once(tmp_path, reader):
    path = fifo(tmp_path / "f")
    t = time.perf_counter()
    with pytest.raises(fileio.FileError, match="not a regular file"):
        getattr(fileio, reader)(path)
    assert time.perf_counter() - t < 5


@pytest.mark.parametrize("name", ["config.json", "vocab.json", "model.safetensors"])
def test_a_fifo_in_a_gpt2_folder_is_refused_by_both_clis_not_a_hang(trained, tmp_path, corpus, capsys, name):
    from minigpt.checkpoint import load_model
    from minigpt.pretrained import export_safetensors
    directory = tmp_path / "gpt2"
    export_safetensors(load_model(trained / "ckpt.npz")[0], directory)
    (directory / "merges.txt").write_text("#version: 0.2\n")
    (directory / "vocab.json").write_text("{}")
    (directory / name).unlink(missing_ok=True)
    fifo(directory / name)
    t = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        sample_main(["--pretrained", str(directory), "--max-new-tokens", "2"])
    err = one_line(capsys, e.value.code)
    assert "not a regular file" in err, err
    err = one_line(capsys, main([str(corpus), "--out-dir", str(tmp_path / "ft"), *TINY,
                                 "--max-iters", "2", "--init-from-pretrained", str(directory)]))
    assert "not a regular file" in err and time.perf_counter() - t < 8, err


def test_a_fifo_as_metrics_or_token_cache_is_never_waited_on(tmp_path):
    from minigpt.data import _read_cache
    t = time.perf_counter()
    assert read_metrics(fifo(tmp_path / "metrics.jsonl"), 10) == []
    os.mkfifo(tmp_path / "tokens.bin")
    assert _read_cache(tmp_path / "tokens.bin", fifo(tmp_path / "tokens.json"), {}) is None
    assert time.perf_counter() - t < 5                # not released by fifo()'s writer after 10 s


# ---------------------------------------------------------------- .jsonl lines and duplicate keys

def test_a_jsonl_line_holding_u2028_or_u0085_in_a_string_is_one_example(tmp_path):
    pairs = [{"prompt": "a\u2028b: ", "completion": "c\u0085d"}, {"prompt": "e\x1c: ", "completion": "f\r"}]
    path = tmp_path / "task.jsonl"
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8",
                    newline="")
    assert [(p, c) for _, p, c in read_examples(path)] == [(p["prompt"], p["completion"]) for p in pairs]


def test_metrics_with_u2028_in_a_string_read_back(tmp_path):
    path = tmp_path / "metrics.jsonl"
    record = {"iter": 5, "train_loss": 1.0, "val_loss": 2.0, "note": "x\u2028y"}
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_metrics(path, 10) == [record]


def test_a_duplicate_json_key_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match="duplicate key 'prompt'"):
        fileio.loads_json('{"prompt": "a", "completion": "b", "prompt": "c"}')
    path = tmp_path / "task.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": "b", "completion": "c"}\n')
    from minigpt.data import DataError
    with pytest.raises(DataError, match=r"task.jsonl:2: duplicate key 'completion'"):
        read_examples(path)


# ---------------------------------------------------------------- numbers with a range

def _rewrite_meta(path, edit):
    with np.load(path) as a:
        arrays = {k: a[k] for k in a.files}
    meta = json.loads(arrays["meta"].tobytes())
    edit(meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("field, edit", [
    ("adam.t", lambda m: m["adam"].update(t=10**400)),
    ("iter_num", lambda m: m.update(iter_num=10**400)),
    ("best_val_loss", lambda m: m.update(best_val_loss=-1e308)),
    ("adam.eps", lambda m: m["adam"].update(eps=0.0)),
    ("train_args.elapsed_s", lambda m: m["train_args"].update(elapsed_s=1e300)),
    ("train_args", lambda m: m["train_args"].update(warmup_iters=10**400)),
])
def test_a_lying_number_in_a_checkpoint_is_damaged_on_resume(trained, corpus, capsys, field, edit):
    _rewrite_meta(trained / "ckpt.npz", edit)
    err = one_line(capsys, main([str(corpus), "--out-dir", str(trained), "--resume"]))
    assert f"damaged checkpoint: {field}" in err, err


@pytest.mark.parametrize("flag, value", [("--lr-decay-iters", "-5"), ("--lr-decay-iters", "0"),
                                         ("--max-iters", str(10**13)), ("--seed", str(2**64)),
                                         ("--max-time", "1e300")])
def test_a_flag_out_of_its_range_is_one_line(corpus, tmp_path, capsys, flag, value):
    err = one_line(capsys, train(corpus, tmp_path, "--max-iters", 2, flag, value))
    assert flag in err, err
    assert not tmp_path.exists() or not (tmp_path / "ckpt.npz").exists()


@pytest.mark.parametrize("flag, value", [("--grad-accum", "1000000"), ("--eval-iters", "3000000")])
def test_a_budget_that_cannot_hold_one_step_and_the_final_eval_is_refused_at_the_start(corpus, tmp_path, flag, value):
    cmd = [sys.executable, "-m", "minigpt.train", str(corpus), "--out-dir", str(tmp_path), *TINY,
           "--max-time", "0.1", flag, value]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "the time budget cannot hold" in r.stderr and flag in r.stderr
    assert not (tmp_path / "ckpt.npz").exists()


def test_a_refused_budget_with_overwrite_keeps_the_last_runs_history(corpus, trained):
    before = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    cmd = [sys.executable, "-m", "minigpt.train", str(corpus), "--out-dir", str(trained), *TINY,
           "--max-time", "0.1", "--eval-iters", "3000000", "--overwrite"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 2 and "the time budget cannot hold" in r.stderr, r.stderr
    after = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file() and p.name != fileio.LOCK_NAME}
    assert "log.jsonl" in before and after == {k: v for k, v in before.items() if k != fileio.LOCK_NAME}


@pytest.mark.parametrize("flag, value", [("--max-new-tokens", str(10**400)), ("--num-samples", str(10**12)),
                                         ("--seed", str(2**64)), ("--top-k", str(10**10))])
def test_a_sampling_flag_out_of_its_range_is_one_line(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as e:                # refused by the parser, before any file is read
        sample_main(["--ckpt", str(tmp_path / "ckpt.npz"), flag, value])
    err = one_line(capsys, e.value.code)
    assert flag in err, err


def test_a_metrics_record_with_a_negative_iteration_or_loss_is_skipped(tmp_path):
    good = {"iter": 5, "train_loss": 1.0, "val_loss": 2.0}
    bad = [dict(good, iter=-5), dict(good, train_loss=-1e308), dict(good, val_loss=-1.0)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*bad, good]))
    assert read_metrics(tmp_path / "metrics.jsonl", 10) == [good]
