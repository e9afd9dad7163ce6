"""The training CLI, run in-process on a tiny text with a tiny model (seconds each)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigpt.backend import gpu_available
from minigpt.checkpoint import load_checkpoint
from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import build_tokenizer
from minigpt.train import main
from minigpt.train_flags import build_parser

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT / "shakespeare.txt"
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "2", "--log-interval", "5", "--sample-tokens", "10", "--max-time", "0"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The first 20,000 characters of shakespeare.txt."""
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:20000], encoding="utf-8")
    return path


def train(corpus, out, *flags):
    return main([str(corpus), "--out-dir", str(out), *TINY, *flags])


def test_run_writes_a_loadable_checkpoint_metrics_and_a_plot(corpus, tmp_path, capsys):
    assert train(corpus, tmp_path, "--max-iters", "10", "--eval-interval", "5") == 0
    ck = load_checkpoint(tmp_path / "ckpt.npz")
    assert ck["iter_num"] == 10 and ck["config"].n_embd == 16 and ck["optimizer_state"]["t"] == 10
    text = corpus.read_text(encoding="utf-8")
    assert ck["tokenizer"].decode(ck["tokenizer"].encode(text[:200])) == text[:200]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [5, 10]
    assert set(records[0]) == {"iter", "train_loss", "val_loss", "lr", "elapsed_s", "tokens_per_s"}
    assert ck["best_val_loss"] == min(r["val_loss"] for r in records)
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert re.search(r"iter +5/10 \| loss \d\.\d{4} \| lr \S+ \| \S+ ms/iter \| \S+ tok/s.* \| ETA \d+m\d\ds", out)
    assert "eval iter 10: train" in out and "best val loss" in out and str(tmp_path / "ckpt.npz") in out


def test_time_budget_ends_the_run_in_time_with_the_schedule_fully_decayed(corpus, tmp_path):
    flags = [a for a in TINY if a not in ("--max-time", "0")]
    t = time.perf_counter()
    assert main([str(corpus), "--out-dir", str(tmp_path), *flags, "--max-time", "0.12", "--log-interval", "10",
                 "--eval-interval", "100000", "--warmup-iters", "5", "--lr", "1e-2", "--min-lr", "1e-3"]) == 0
    assert time.perf_counter() - t < 0.12 * 60 + 3       # the budget covers the whole command
    final = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["iter"] > 10
    assert final["lr"] < 1e-3 + 0.1 * (1e-2 - 1e-3)         # the cosine reached (nearly) min_lr


def _params(path):
    ck = load_checkpoint(path)
    return ck["model"].params, ck["optimizer_state"]


def test_resume_gives_bit_identical_results_to_an_uninterrupted_run(corpus, tmp_path):
    common = ["--dropout", "0.1", "--warmup-iters", "4", "--eval-interval", "5", "--lr", "3e-3"]
    assert train(corpus, tmp_path / "a", "--max-iters", "20", *common) == 0
    assert train(corpus, tmp_path / "b", "--max-iters", "10", "--lr-decay-iters", "20", *common) == 0
    assert main([str(corpus), "--out-dir", str(tmp_path / "b"), "--resume", "--max-iters", "20"]) == 0
    (pa, oa), (pb, ob) = _params(tmp_path / "a" / "ckpt.npz"), _params(tmp_path / "b" / "ckpt.npz")
    for k in pa:
        assert np.array_equal(pa[k], pb[k]) and np.array_equal(oa["v"][k], ob["v"][k]), k
    losses = [[(r["iter"], r["train_loss"], r["val_loss"]) for r in map(json.loads, open(p / "metrics.jsonl"))]
              for p in (tmp_path / "a", tmp_path / "b")]
    assert losses[0] == losses[1] and len(losses[0]) == 4


def test_sigint_saves_a_checkpoint_that_resumes(corpus, tmp_path):
    cmd = [sys.executable, "-m", "minigpt.train", str(corpus), "--out-dir", str(tmp_path), *TINY,
           "--max-iters", "100000", "--log-interval", "1", "--eval-interval", "100000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:                   # wait until training is under way
        if line.startswith("iter"):
            break
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert len(err.strip().splitlines()) == 1 and "interrupted at iter" in err and "Traceback" not in err
    stopped_at = int(re.search(r"iter (\d+)", err).group(1))
    assert load_checkpoint(tmp_path / "ckpt.npz")["iter_num"] == stopped_at >= 1
    assert main([str(corpus), "--out-dir", str(tmp_path), "--resume", "--max-iters", str(stopped_at + 3)]) == 0
    assert load_checkpoint(tmp_path / "ckpt.npz")["iter_num"] == stopped_at + 3


def test_init_from_fine_tunes_the_given_weights_with_their_tokenizer(corpus, tmp_path):
    assert train(corpus, tmp_path / "base", "--max-iters", "10", "--lr", "1e-2") == 0
    base = load_checkpoint(tmp_path / "base" / "ckpt.npz")
    other = tmp_path / "other.txt"
    other.write_text(SHAKESPEARE.read_text(encoding="utf-8")[20000:40000], encoding="utf-8")
    assert main([str(other), "--out-dir", str(tmp_path / "ft"), "--init-from", str(tmp_path / "base" / "ckpt.npz"),
                 "--batch-size", "4", "--eval-iters", "2", "--sample-tokens", "0", "--max-time", "0",
                 "--max-iters", "1", "--lr", "1e-9", "--min-lr", "0", "--warmup-iters", "0"]) == 0
    ft = load_checkpoint(tmp_path / "ft" / "ckpt.npz")
    assert ft["iter_num"] == 1 and ft["config"] == base["config"]
    assert ft["tokenizer"].to_json() == base["tokenizer"].to_json()
    fresh = GPT(base["config"], seed=1337).params
    for k, p in base["model"].params.items():
        np.testing.assert_allclose(ft["model"].params[k], p, atol=1e-6)
    assert not np.allclose(ft["model"].params["wte.weight"], fresh["wte.weight"], atol=1e-3)


def test_init_from_pretrained_fine_tunes_gpt2_weights_with_gpt2_tokens(corpus, tmp_path):
    pretrained = pytest.importorskip("minigpt.pretrained")
    config = GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=2, n_embd=16)
    gpt2_like = GPT(config, seed=5)
    pretrained.export_safetensors(gpt2_like, tmp_path / "gpt2")
    assert main([str(corpus), "--out-dir", str(tmp_path / "ft"), "--init-from-pretrained", str(tmp_path / "gpt2"),
                 "--batch-size", "2", "--eval-iters", "1", "--sample-tokens", "0", "--max-time", "0",
                 "--max-iters", "1", "--lr", "1e-9", "--min-lr", "0", "--warmup-iters", "0"]) == 0
    ft = load_checkpoint(tmp_path / "ft" / "ckpt.npz")
    assert ft["config"].vocab_size == 50257 and ft["tokenizer"].encode("hello world") == [31373, 995]
    for k, p in gpt2_like.params.items():
        np.testing.assert_allclose(ft["model"].params[k], p, atol=1e-6)


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(corpus, tmp_path, capsys):
    assert train(corpus, tmp_path, "--max-iters", "5", "--eval-interval", "5") == 0
    before = (tmp_path / "ckpt.npz").read_bytes()
    status = main([str(corpus), "--out-dir", str(tmp_path), "--resume", "--max-iters", "30",
                   "--lr", "1e30", "--grad-clip", "0"])
    err = capsys.readouterr().err
    assert status == 1 and len(err.strip().splitlines()) == 1
    assert re.search(r"loss is (nan|inf)", err) and "last good checkpoint" in err
    assert (tmp_path / "ckpt.npz").read_bytes() == before


def _run_bad(argv, capsys):
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("dir", "is a directory"),
    (b"", "is empty"),
    (b"caf\xe9 au lait, " * 100, "not UTF-8 text: byte 0xe9 at offset 3"),
    (b"too short for a block\n" * 5, r"too short for block size 16: it has 110 tokens and needs at least \d+"),
])
def test_bad_text_file_exits_2_with_one_clear_line(tmp_path, capsys, content, message):
    path = tmp_path / "input.txt"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    err = _run_bad([path, "--out-dir", tmp_path / "out", *TINY, "--max-iters", "1"], capsys)
    assert re.search(message, err), err


@pytest.mark.parametrize("flags, message", [
    (["--n-embd", "30", "--n-head", "4"], "--n-embd 30 is not divisible by --n-head 4"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--batch-size", "many"], "invalid int value"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--resume"], "--resume: no checkpoint at"),
    (["--init-from", "missing.npz"], "no checkpoint at missing.npz"),
    (["--beta2", "1.5"], "--beta2 must be in [0, 1)"),
    (["--beta2", "1.0"], "--beta2 must be in [0, 1)"),
    (["--seed", "-1"], "--seed must be 0 or more"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--max-time", "nan"], "--max-time must be a finite number"),
    (["--grad-clip", "-1"], "--grad-clip cannot be negative"),
    (["--resume", "--init-from", "other.npz"], "use only one of --resume, --init-from"),
])
def test_bad_flags_exit_2_with_one_clear_line(corpus, tmp_path, capsys, flags, message):
    err = _run_bad([corpus, "--out-dir", tmp_path, *TINY, "--max-iters", "1", *flags], capsys)
    assert message in err, err


def test_running_out_of_memory_is_one_line(corpus, tmp_path, capsys, monkeypatch):
    import minigpt.train as train_module

    def no_memory(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(train_module, "make_run", no_memory)
    err = _run_bad([corpus, "--out-dir", tmp_path, *TINY, "--max-iters", "1"], capsys)
    assert "out of memory" in err and "--block-size" in err


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU, so --device cuda works")
def test_cuda_without_a_gpu_names_what_to_install(corpus, tmp_path, capsys):
    err = _run_bad([corpus, "--out-dir", tmp_path, *TINY, "--max-iters", "1", "--device", "cuda"], capsys)
    assert "--device cuda" in err and ("pip install cupy" in err or "no CUDA GPU" in err)


def test_tf32_is_an_opt_in_flag_for_the_gpu(capsys):
    assert build_parser().parse_args(["x.txt"]).tf32 is False
    assert main(["--help"]) == 0
    assert "--tf32 on the GPU, TF32 tensor-core matmuls" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_tf32_on_the_cpu_exits_2_with_one_clear_line(corpus, tmp_path, capsys, device):
    if device == "auto" and gpu_available():
        pytest.skip("this machine has a GPU, so --device auto is cuda")
    err = _run_bad([corpus, "--out-dir", tmp_path, *TINY, "--max-iters", "1", "--device", device, "--tf32"],
                   capsys)
    assert "--tf32 is for GPUs" in err and "on the cpu" in err
    assert not (tmp_path / "ckpt.npz").exists()


@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA GPU")
def test_tf32_on_a_gpu_turns_tf32_on_and_trains(corpus, tmp_path, monkeypatch):
    import minigpt.run
    calls = []                                     # a spy, so the TF32 switch does not outlive the test
    monkeypatch.setattr(minigpt.run, "enable_tf32", lambda device: calls.append(device))
    assert train(corpus, tmp_path, "--device", "cuda", "--tf32", "--max-iters", "2", "--sample-tokens", "0") == 0
    assert calls == ["cuda"]


@pytest.fixture
def trained(corpus, tmp_path):
    """An out-dir holding the checkpoint of a 2-iteration run."""
    assert train(corpus, tmp_path, "--max-iters", "2", "--sample-tokens", "0") == 0
    return tmp_path


def test_damaged_checkpoint_is_refused_and_left_in_place(corpus, trained, capsys):
    ckpt = trained / "ckpt.npz"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    damaged = ckpt.read_bytes()
    err = _run_bad([corpus, "--out-dir", trained, "--resume"], capsys)
    assert "damaged" in err and ckpt.read_bytes() == damaged


def test_resume_with_another_model_shape_is_refused(corpus, trained, capsys):
    err = _run_bad([corpus, "--out-dir", trained, "--resume", "--n-layer", "3"], capsys)
    assert "has --n-layer 1, but --n-layer 3 was given" in err


def test_pickled_npz_is_refused(corpus, tmp_path, capsys):
    evil = tmp_path / "evil.npz"
    np.savez(evil, meta=np.array([{"run": "code"}], dtype=object))
    err = _run_bad([corpus, "--out-dir", tmp_path / "out", *TINY, "--max-iters", "1", "--init-from", evil], capsys)
    assert "pickle" in err


def test_a_new_run_never_overwrites_an_existing_checkpoint(corpus, trained, capsys):
    before = (trained / "ckpt.npz").read_bytes()
    err = _run_bad([corpus, "--out-dir", trained, *TINY, "--max-iters", "2"], capsys)
    assert "already exists" in err and (trained / "ckpt.npz").read_bytes() == before


def test_every_flag_has_help():
    for action in build_parser()._actions:
        assert action.help, action.dest


def test_default_model_and_flags_are_what_the_training_docs_say():
    readme = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    section = re.search(r"^# Training.*?(?=^## The time|\Z)", readme, flags=re.M | re.S)
    assert section, "docs/training.md has no '# Training' title"
    rows = dict(re.findall(r"^\| `--([a-z0-9-]+)` \| `?([^|`]+?)`? \|", section.group(0), flags=re.M))
    assert len(rows) >= 10, "the Train section has no table of defaults (| `--flag` | value | ...)"
    defaults = build_parser().parse_args(["x.txt"])
    for flag, value in rows.items():
        assert str(getattr(defaults, flag.replace("-", "_"))) == value.strip(), flag
    vocab = build_tokenizer("char", SHAKESPEARE.read_text(encoding="utf-8")).vocab_size
    config = GPTConfig(vocab_size=vocab, block_size=defaults.block_size, n_layer=defaults.n_layer,
                       n_head=defaults.n_head, n_embd=defaults.n_embd)
    stated = re.search(r"default model has ([\d,]+) parameters", section.group(0))
    assert stated and int(stated.group(1).replace(",", "")) == GPT(config).num_params()


def test_a_nan_loss_in_an_overwrite_run_does_not_point_at_the_previous_runs_checkpoint(corpus, tmp_path, capsys):
    assert train(corpus, tmp_path, "--max-iters", "5", "--eval-interval", "5") == 0
    capsys.readouterr()
    status = train(corpus, tmp_path, "--overwrite", "--max-iters", "30", "--lr", "1e30", "--grad-clip", "0",
                   "--eval-interval", "100")             # no eval at the start: nothing saved
    err = capsys.readouterr().err
    assert status == 1 and len(err.strip().splitlines()) == 1, err
    assert "this run saved no checkpoint" in err and "last good" not in err, err


def test_without_an_eval_interval_the_curve_starts_at_step_0_with_an_eval_each_tenth(corpus, tmp_path, capsys):
    assert train(corpus, tmp_path, "--max-iters", "40", "--log-interval", "4") == 0
    evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in evals] == [*range(0, 33, 4), 40]   # the start, each tenth to the 8th, the end
    assert evals[0]["val_loss"] > evals[-1]["val_loss"]
    assert evals[0]["eval_iters"] == 1 and "eval_iters" not in evals[1]   # step 0: a tenth of the batches
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == list(range(4, 41, 4))    # every log line's train loss
    assert all(r["loss"] > 0 and r["lr"] > 0 for r in log)
    assert "eval iter 0: train" in capsys.readouterr().out
    # a resumed run starts from its checkpoint's eval and keeps the log lines up to it
    assert train(corpus, tmp_path, "--max-iters", "48", "--log-interval", "4", "--resume") == 0
    evals = [json.loads(line)["iter"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert evals[:10] == [*range(0, 33, 4), 40] and evals.count(40) == 1 and evals[-1] == 48
    log = [json.loads(line)["iter"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log == list(range(4, 49, 4))


def test_loss_png_draws_the_log_lines_train_loss_beside_the_evals(corpus, tmp_path, monkeypatch):
    from minigpt import train as train_module
    drawn = []
    real = train_module.plot_losses
    monkeypatch.setattr(train_module, "plot_losses", lambda *a: drawn.append(real(*a)) or drawn[-1])
    assert train(corpus, tmp_path, "--max-iters", "12", "--log-interval", "2", "--eval-interval", "6") == 0
    lines = {line.get_label(): line for line in drawn[-1].axes[0].get_lines()}
    assert list(lines["train (each log line)"].get_xdata()) == [2, 4, 6, 8, 10, 12]
    assert list(lines["val (eval)"].get_xdata()) == [6, 12]


def test_a_tenth_whose_eval_the_time_cannot_afford_still_saves_the_checkpoint(corpus, tmp_path, capsys, monkeypatch):
    from minigpt import progress
    from minigpt import train as train_module
    monkeypatch.setattr(progress.EvalSchedule, "GAP", 10 ** 9)    # every eval too dear for the budget
    saved, real = [], train_module.save
    monkeypatch.setattr(train_module, "save", lambda run: saved.append(run.it) or real(run))
    assert train(corpus, tmp_path, "--max-iters", "40", "--log-interval", "4", "--max-time", "5") == 0
    assert saved == [*range(0, 33, 4), 40]                        # a checkpoint at each tenth
    evals = [json.loads(line)["iter"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert evals == [0, 40]                                       # evals only at the start and the end
    assert f"saved {tmp_path / 'ckpt.npz'} at iter 4 (no eval" in capsys.readouterr().out
