"""Bad input end to end: every case ends in one line and exit status 2 (or a correct result),
never a traceback, a hang, a silently wrong result or a lost checkpoint."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

from minigpt import fileio
from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import CharTokenizer
from minigpt.train import main

from tiny_cli import ROOT, TINY, corpus, one_line, train  # noqa: F401 (corpus: a fixture)


@pytest.fixture
def trained(corpus, tmp_path):
    out = tmp_path / "run"
    assert train(corpus, out, "--max-iters", 10, "--eval-interval", 5) == 0
    return out


def _rewrite_meta(path, edit):
    with np.load(path) as a:
        arrays = {k: a[k] for k in a.files}
    meta = json.loads(arrays["meta"].tobytes())
    edit(meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)


# ---------------------------------------------------------------- silent wrong results, lost work

def test_2_a_second_run_into_a_locked_out_dir_is_refused(corpus, tmp_path, capsys):
    with fileio.claim_dir(tmp_path):               # another run holds the folder
        err = one_line(capsys, train(corpus, tmp_path, "--max-iters", 2))
    assert "another minigpt run is using" in err and not (tmp_path / "ckpt.npz").exists()


def test_4_resume_refuses_an_edited_training_file(corpus, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(corpus.read_text())
    assert train(text, tmp_path / "run", "--max-iters", 5) == 0
    text.write_text(corpus.read_text().replace("the", "teh"))
    capsys.readouterr()
    err = one_line(capsys, main([str(text), "--out-dir", str(tmp_path / "run"), "--resume", "--max-iters", "8"]))
    assert "has changed since" in err and "--init-from" in err
    assert load_checkpoint(tmp_path / "run" / "ckpt.npz")["iter_num"] == 5


def test_5_a_run_removes_the_temporaries_a_killed_run_left(corpus, tmp_path):
    stale = tmp_path / (fileio.TMP_PREFIX + "killed")
    stale.write_bytes(b"\0" * 4096)                # left by a kill -9 during an earlier write
    assert train(corpus, tmp_path, "--max-iters", 2) == 0
    assert not stale.exists() and (tmp_path / "ckpt.npz").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_5_sigterm_before_the_first_eval_saves_a_resumable_checkpoint(corpus, tmp_path, signum):
    cmd = [sys.executable, "-m", "minigpt.train", str(corpus), "--out-dir", str(tmp_path), *TINY,
           "--max-iters", "100000", "--log-interval", "1", "--eval-interval", "100000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("iter"):
            break
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert len(err.strip().splitlines()) == 1 and "interrupted at iter" in err and signum.name in err
    stopped_at = int(re.search(r"iter (\d+)", err).group(1))
    assert load_checkpoint(tmp_path / "ckpt.npz")["iter_num"] == stopped_at >= 1
    assert main([str(corpus), "--out-dir", str(tmp_path), "--resume", "--max-iters", str(stopped_at + 2)]) == 0


# ---------------------------------------------------------------- an unusable out-dir

def test_6_an_out_dir_that_is_a_file_is_one_line(corpus, tmp_path, capsys):
    (tmp_path / "out").write_text("not a folder")
    err = one_line(capsys, train(corpus, tmp_path / "out", "--max-iters", 2))
    assert "is a file, not a folder" in err


def test_6_an_unwritable_out_dir_is_found_at_the_start_of_a_resume(trained, corpus, capsys, monkeypatch):
    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    err = one_line(capsys, main([str(corpus), "--out-dir", str(trained), "--resume", "--max-iters", "20"]))
    assert "cannot write" in err and "Permission denied" in err
    assert "resuming" not in capsys.readouterr().out


def test_6_a_full_disk_keeps_the_last_checkpoint_and_metrics_never_run_ahead(corpus, tmp_path, capsys, monkeypatch):
    real, saves = np.savez, []

    def fill_up_at_second_save(f, **arrays):
        saves.append(1)
        if len(saves) >= 2:
            raise OSError(28, "No space left on device")
        real(f, **arrays)
    monkeypatch.setattr(np, "savez", fill_up_at_second_save)
    err = one_line(capsys, train(corpus, tmp_path, "--max-iters", 20, "--eval-interval", 5))
    assert "No space left on device" in err and "ckpt.npz" in err
    assert load_checkpoint(tmp_path / "ckpt.npz")["iter_num"] == 5
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [5]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(fileio.TMP_PREFIX)] == []


# ---------------------------------------------------------------- damaged or mismatched files

def test_7_fine_tuning_a_model_with_a_padded_vocabulary_samples_only_decodable_ids(corpus, tmp_path, capsys):
    from minigpt.bpe_gpt2 import GPT2_ASSETS
    from minigpt.pretrained import export_safetensors
    import shutil
    model = GPT(GPTConfig(vocab_size=50304, block_size=16, n_layer=1, n_head=2, n_embd=8), seed=0)
    model.params["ln_f.weight"][:] = 0.0
    model.params["ln_f.bias"][:] = 1.0
    model.params["wte.weight"][50257:] = 1.0       # the padding ids are the most likely
    export_safetensors(model, tmp_path / "gpt2")
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(GPT2_ASSETS / name, tmp_path / "gpt2" / name)
    status = main([str(corpus), "--out-dir", str(tmp_path / "out"), *TINY, "--max-iters", "2",
                   "--eval-interval", "2", "--init-from-pretrained", str(tmp_path / "gpt2"),
                   "--n-embd", "8", "--lr", "1e-6", "--min-lr", "1e-7"])
    assert status == 0, capsys.readouterr().err


def _nan_checkpoint(path):
    tok = CharTokenizer.train("hello world")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    model.params["h.0.attn.c_attn.weight"][0, 0] = np.nan
    save_checkpoint(path, model, tokenizer=tok)


def test_8_non_finite_weights_are_refused_by_both_clis(corpus, tmp_path, capsys):
    from minigpt.sample import main as sample
    _nan_checkpoint(tmp_path / "nan.npz")
    err = one_line(capsys, train(corpus, tmp_path / "out", "--init-from", tmp_path / "nan.npz", "--max-iters", 2,
                                 "--n-embd", "8", "--block-size", "16"))
    assert "not finite" in err
    with pytest.raises(SystemExit) as e:
        sample(["--ckpt", str(tmp_path / "nan.npz"), "--greedy", "--device", "cpu"])
    err = one_line(capsys, e.value.code)
    assert "not finite" in err


def test_9_a_float16_checkpoint_fine_tunes_without_nan(trained, corpus, tmp_path, capsys):
    path = trained / "ckpt.npz"
    with np.load(path) as a:
        arrays = {k: a[k].astype(np.float16) if k.startswith("param/") else a[k] for k in a.files}
    np.savez(tmp_path / "f16.npz", **arrays)
    assert train(corpus, tmp_path / "ft", "--init-from", tmp_path / "f16.npz", "--max-iters", 5) == 0


@pytest.mark.parametrize("edit, field", [
    (lambda m: m.update(iter_num=[1]), "iter_num"),
    (lambda m: m.update(iter_num="abc"), "iter_num"),
    (lambda m: m["adam"].pop("t"), "adam.t"),
    (lambda m: m.update(best_val_loss="x"), "best_val_loss"),
    (lambda m: m.update(train_args=[1]), "train_args"),
    (lambda m: m["train_args"].update(lr="abc"), "train_args"),
    (lambda m: m["train_args"].update(elapsed_s="abc"), "train_args"),
    (lambda m: m.update(rng_state={"batch": {"bit_generator": "nope"}}), "rng_state"),
    (lambda m: m["config"].update(block_size=16.0), "config.block_size"),
    (lambda m: m.update(train_args={}), "train_args has no batch_size"),
    (lambda m: m["train_args"].pop("seed"), "train_args has no seed"),
    (lambda m: m.update(rng_state={"foo": 1}), "rng_state"),
    (lambda m: m.update(rng_state={"batch": 1, "dropout": 2}), "rng_state"),
    (lambda m: m.update(rng_state={"batch": m["rng_state"]["batch"], "dropout": {"state": 1}}), "rng_state"),
    (lambda m: m.update(rng_state=None), "rng_state"),
])
def test_10_lying_metadata_is_damaged_checkpoint_in_both_clis(trained, corpus, capsys, edit, field):
    from minigpt.sample import main as sample
    path = trained / "ckpt.npz"
    _rewrite_meta(path, edit)
    capsys.readouterr()
    err = one_line(capsys, main([str(corpus), "--out-dir", str(trained), "--resume", "--max-iters", "12"]))
    assert f"damaged checkpoint: {field}" in err, err
    if field.startswith(("train_args", "rng_state")):
        return                                     # sampling does not read those
    with pytest.raises(SystemExit) as e:
        sample(["--ckpt", str(path), "--device", "cpu", "--max-new-tokens", "2"])
    assert f"damaged checkpoint: {field}" in one_line(capsys, e.value.code)


def test_tester_a_resume_takes_the_shape_flags_from_the_weights_not_train_args(trained, corpus, capsys):
    _rewrite_meta(trained / "ckpt.npz", lambda m: [m["train_args"].pop(k) for k in
                                                   ("n_layer", "n_head", "n_embd", "block_size")])
    assert main([str(corpus), "--out-dir", str(trained), "--resume", "--max-iters", "12"]) == 0
    assert "block 16" in capsys.readouterr().out


def test_11_deeply_nested_json_in_a_checkpoint_is_one_line(trained, corpus, capsys):
    with np.load(trained / "ckpt.npz") as a:
        arrays = {k: a[k] for k in a.files}
    arrays["meta"] = np.frombuffer(b"[" * 200_000, np.uint8)
    np.savez(trained / "ckpt.npz", **arrays)
    capsys.readouterr()
    err = one_line(capsys, main([str(corpus), "--out-dir", str(trained), "--resume"]))
    assert "nested more than" in err


def test_14_a_declared_size_larger_than_the_file_is_damaged_in_the_cli(trained, corpus, capsys):
    _rewrite_meta(trained / "ckpt.npz", lambda m: m["config"].update(n_layer=10**6))
    capsys.readouterr()
    err = one_line(capsys, main([str(corpus), "--out-dir", str(trained), "--resume"]))
    assert "damaged checkpoint: config.n_layer" in err


# ---------------------------------------------------------------- flags and paths

def test_15_overwrite_starts_metrics_afresh(trained, corpus, capsys, monkeypatch):
    import minigpt.train as train_module

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_module, "train_loop", interrupted)
    assert train(corpus, trained, "--overwrite", "--max-iters", 3) == 130
    metrics = trained / "metrics.jsonl"
    assert not metrics.exists() or metrics.read_text() == ""
    assert not (trained / "loss.png").exists()


def test_16_a_training_text_from_process_substitution_is_read_once(corpus, tmp_path, capsys, pipe_path):
    assert main([pipe_path(corpus.read_bytes()), "--out-dir", str(tmp_path), *TINY, "--max-iters", "2"]) == 0


def _unblock_later(fifo, seconds=10):
    """If a reader is stuck opening fifo, open and close its other end after a while: a
    regression then fails this test instead of hanging the suite."""
    def unblock():
        time.sleep(seconds)
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass                               # nobody is waiting on it: good
    threading.Thread(target=unblock, daemon=True).start()


def test_17_init_from_a_fifo_is_refused_not_a_hang(corpus, tmp_path, capsys):
    os.mkfifo(tmp_path / "ckpt.fifo")
    _unblock_later(tmp_path / "ckpt.fifo")
    err = one_line(capsys, train(corpus, tmp_path / "out", "--init-from", tmp_path / "ckpt.fifo", "--max-iters", 2))
    assert "not a regular file" in err


# ---------------------------------------------------------------- the time budget on short runs

def test_a_short_budget_plans_from_a_warm_up_and_ends_at_min_lr_with_one_log_line_per_interval(
        corpus, tmp_path, capsys):
    flags = [a for a in TINY if a not in ("--max-time", "0", "--log-interval", "5")]
    assert main([str(corpus), "--out-dir", str(tmp_path), *flags, "--max-time", "0.1",
                 "--log-interval", "50", "--eval-interval", "100000", "--lr", "1e-2", "--min-lr", "1e-3"]) == 0
    out = capsys.readouterr().out
    final = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["lr"] < 1e-3 + 0.05 * (1e-2 - 1e-3)       # decayed (nearly) to --min-lr
    logged = [int(m) for m in re.findall(r"^iter +(\d+)/", out, re.M)]
    assert logged and logged[-1] == final["iter"]
    assert all(i % 50 == 0 for i in logged[:-1]) and len(set(logged)) == len(logged)
    assert re.search(r"plan: \d+ iterations", out)          # planned once, after a short warm-up


# ---------------------------------------------------------------- found by crafting more bad input

def test_extra_a_device_as_training_text_is_refused_not_read_forever(tmp_path):
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "from minigpt.train import main; raise SystemExit(main(['/dev/zero', '--out-dir', %r]))"
            % str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is a device" in proc.stderr and "Traceback" not in proc.stderr


def test_extra_an_empty_out_dir_is_one_line(corpus, capsys):
    assert "cannot be empty" in one_line(capsys, main([str(corpus), "--out-dir", "", *TINY, "--max-iters", "1"]))


@pytest.mark.parametrize("content", ["[" * 200_000, '{"iter": "abc", "train_loss": 1}', '{"iter": 1}'])
def test_extra_a_damaged_metrics_jsonl_is_skipped_on_resume(trained, corpus, capsys, content):
    (trained / "metrics.jsonl").write_text('{"iter": 5, "train_loss": 3.0, "val_loss": 3.1}\n' + content + "\n")
    assert main([str(corpus), "--out-dir", str(trained), "--resume", "--max-iters", "15"]) == 0
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [5, 15]


def test_extra_resuming_a_checkpoint_without_a_tokenizer_is_refused(trained, corpus, capsys):
    with np.load(trained / "ckpt.npz") as a:
        arrays = {k: a[k] for k in a.files if k != "tokenizer"}
    np.savez(trained / "ckpt.npz", **arrays)
    capsys.readouterr()
    err = one_line(capsys, main([str(corpus), "--out-dir", str(trained), "--resume", "--max-iters", "12"]))
    assert "holds no tokenizer" in err


@pytest.mark.parametrize("name", ["ckpt.npz", "metrics.jsonl"])
def test_extra_an_output_name_taken_by_a_folder_is_found_before_training(corpus, tmp_path, capsys, name):
    (tmp_path / name).mkdir()
    err = one_line(capsys, train(corpus, tmp_path, "--overwrite", "--max-iters", 3))
    assert "is not a file" in err and "model:" not in capsys.readouterr().out


def test_extra_sampling_with_stdout_closed_is_one_line(trained, capsys, monkeypatch):
    from minigpt.sample import main as sample
    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(SystemExit) as e:
        sample(["--ckpt", str(trained / "ckpt.npz"), "--device", "cpu", "--max-new-tokens", "2"])
    assert "standard output is closed" in one_line(capsys, e.value.code)


def test_tester_a_closed_stdout_saves_the_checkpoint_and_exits_141(corpus, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "minigpt.train", str(corpus), "--out-dir", str(out), *TINY,
           "--log-interval", "1", "--max-iters", "3000", "--eval-interval", "3000"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""
    while not re.search(rb"iter +20/", seen):               # training is under way: now the reader goes
        seen += p.stdout.read1(100) or pytest.fail(p.stderr.read().decode())
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    ck = load_checkpoint(out / "ckpt.npz")
    assert f"interrupted at iter {ck['iter_num']} (SIGPIPE)" in err and ck["iter_num"] >= 20


def test_tester_a_step_too_large_for_the_memory_is_one_line_before_allocating(corpus, tmp_path, capsys, monkeypatch):
    from minigpt import flops
    monkeypatch.setattr(flops, "physical_memory", lambda: 64 * 2**20)     # a 64 MiB machine
    err = one_line(capsys, train(corpus, tmp_path, "--batch-size", 4096, "--max-iters", 1))
    assert "one training step needs about" in err and "--batch-size" in err, err
    assert "model:" not in capsys.readouterr().out
