"""Data-parallel training under mpiexec: the same weights as one process, resume across rank
counts, and every failure ending the whole job with one clear line.

Each MPI test launches `mpiexec -n N python -m mpi4py ...` in a child process with
MPIEXEC_TIMEOUT and a subprocess timeout, so a bug can fail a test but never hang the suite.
CI installs requirements-mpi.txt: there a missing mpi4py or mpiexec fails these tests.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


from minigpt import dist
from minigpt.checkpoint import load_checkpoint
from minigpt.fileio import LOCK_NAME
from minigpt.gradcheck import rel_error
from minigpt.train import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--eval-iters", "2",
        "--log-interval", "5", "--sample-tokens", "10", "--max-time", "0", "--eval-interval", "10"]
JOB_TIMEOUT_S = 60
# a wrapper around the training CLI that records each rank's exit status (and pid) in OUT_DIR,
# and can break one rank on purpose: MINIGPT_TEST_BREAK=setup|crash|drift on rank 1, or make
# its clock run MINIGPT_TEST_CLOCK times as fast (so it measures itself that much slower)
WRAPPER = """
import os, sys
from minigpt import data, dist, run, train
rank, out = os.environ["PMI_RANK"], sys.argv[sys.argv.index("--out-dir") + 1]
os.makedirs(out, exist_ok=True)
open(os.path.join(out, "pid" + rank), "w").write(str(os.getpid()))
if rank == "1" and os.environ.get("MINIGPT_TEST_BREAK") == "setup":
    def load_data(*a):
        raise data.DataError("rank 1 cannot read the text")
    run.load_data = load_data
if rank == "1" and os.environ.get("MINIGPT_TEST_BREAK") == "crash":
    step = train.train_step
    def train_step(r, lr):
        if r.it == 3:
            raise RuntimeError("rank 1 crashed on purpose")
        return step(r, lr)
    train.train_step = train_step
if rank == "1" and os.environ.get("MINIGPT_TEST_CLOCK"):     # rank 1 measures N times slower
    import time
    real, scale = time.perf_counter, float(os.environ["MINIGPT_TEST_CLOCK"])
    time.perf_counter = lambda: scale * real()
if rank == "1" and os.environ.get("MINIGPT_TEST_BREAK") == "drift":
    step = train.train_step
    def train_step(r, lr):
        loss = step(r, lr)
        if r.it == 3:
            r.model.params["ln_f.bias"][0] += 1e-3
        return loss
    train.train_step = train_step
status = dist.run(lambda: train.main(sys.argv[1:]))
open(os.path.join(out, "status" + rank), "w").write(str(status))
sys.exit(status)
"""


@pytest.fixture(scope="module")
def mpiexec():
    """mpiexec's path; skipped without mpi4py, except under CI, which installs it."""
    if os.environ.get("CI"):
        import mpi4py  # noqa: F401  (CI installs requirements-mpi.txt: a missing mpi4py fails here)
    else:
        pytest.importorskip("mpi4py")
    exe = shutil.which("mpiexec", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("mpi4py is installed but mpiexec is not on PATH (pip install -r requirements-mpi.txt)")
        pytest.skip("no mpiexec")
    return exe


def job(mpiexec, n, *args, env=None):
    """The command line and environment of an N-rank job (one BLAS thread per rank)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPIEXEC_TIMEOUT=str(JOB_TIMEOUT_S), **(env or {}))
    return [mpiexec, "-n", str(n), sys.executable, "-m", "mpi4py", *args], env


def launch(mpiexec, n, *args, env=None):
    cmd, env = job(mpiexec, n, *args, env=env)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S + 15)


def train_job(mpiexec, n, corpus, out, *flags, env=None):
    """`mpiexec -n N python -m mpi4py -c WRAPPER` around `python -m minigpt.train`."""
    return launch(mpiexec, n, "-c", WRAPPER, str(corpus), "--out-dir", str(out), *TINY, *flags, env=env)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text((ROOT / "shakespeare.txt").read_text(encoding="utf-8")[:20000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def one_process_batch_12(corpus, tmp_path_factory):
    """20 steps of one process with --batch-size 12: the reference run."""
    out = tmp_path_factory.mktemp("ref")
    assert main([str(corpus), "--out-dir", str(out), *TINY, "--batch-size", "12", "--max-iters", "20"]) == 0
    return out


def weights(out):
    """All weights of a checkpoint as one vector, and its metrics' iterations."""
    params = load_checkpoint(out / "ckpt.npz")["model"].params
    its = [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return np.concatenate([p.ravel() for p in params.values()]), its


def assert_same_run(out, ref):
    # Relative to the weights' scale (gradcheck.rel_error): entry by entry would not do, since
    # some gradients are zero in exact arithmetic (attention's key bias) and AdamW scales their
    # rounding noise up, differently for a different summation order.
    (w, its), (w_ref, its_ref) = weights(out), weights(ref)
    assert its == its_ref == [10, 20]
    assert rel_error(w, w_ref) < 1e-5


def test_two_ranks_of_batch_6_end_with_the_weights_of_one_process_of_batch_12(
        mpiexec, corpus, one_process_batch_12, tmp_path):
    r = train_job(mpiexec, 2, corpus, tmp_path, "--batch-size", "6", "--max-iters", "20")
    assert r.returncode == 0, r.stderr
    assert_same_run(tmp_path, one_process_batch_12)
    assert "batch: 2 ranks x 6 sequences x 16 tokens = 192 tokens per step" in r.stdout
    assert r.stdout.count("eval iter 20:") == 1 and r.stdout.count("--- sample") == 1   # rank 0 alone
    assert [(tmp_path / f"status{i}").read_text() for i in range(2)] == ["0", "0"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name[:3] in ("pid", "sta")) == \
        [LOCK_NAME, "ckpt.npz", "log.jsonl", "loss.png", "metrics.jsonl", "tokens.bin", "tokens.json"]   # rank 0's lock
    assert load_checkpoint(tmp_path / "ckpt.npz")["train_args"]["ranks"] == 2


def test_resume_from_one_process_on_two_ranks_and_back_continues_the_same_run(
        mpiexec, corpus, one_process_batch_12, tmp_path):
    half = ["--max-iters", "10", "--lr-decay-iters", "20"]
    a, b = tmp_path / "one_then_two", tmp_path / "two_then_one"
    assert main([str(corpus), "--out-dir", str(a), *TINY, "--batch-size", "12", *half]) == 0
    r = train_job(mpiexec, 2, corpus, a, "--resume", "--batch-size", "6", "--max-iters", "20")
    assert r.returncode == 0 and "resuming" in r.stdout, r.stderr
    assert_same_run(a, one_process_batch_12)
    r = train_job(mpiexec, 2, corpus, b, "--batch-size", "6", *half)
    assert r.returncode == 0, r.stderr
    assert main([str(corpus), "--out-dir", str(b), "--resume", "--batch-size", "12", "--max-iters", "20"]) == 0
    assert_same_run(b, one_process_batch_12)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_stops_every_rank_and_rank_0_saves_a_resumable_checkpoint(
        mpiexec, corpus, tmp_path, sig):
    cmd, env = job(mpiexec, 2, "-m", "minigpt.train", str(corpus), "--out-dir", str(tmp_path), *TINY,
                   "--batch-size", "4", "--max-iters", "100000", "--log-interval", "1", "--eval-interval", "100000")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:               # wait until training is under way
            if line.startswith("iter"):
                break
        time.sleep(0.3)
        t = time.perf_counter()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig and time.perf_counter() - t < 10      # 143 for SIGTERM, 130 Ctrl-C
    ours = [line for line in err.splitlines() if not line.startswith("[mpiexec@")]   # the launcher's own
    assert len(ours) == 1 and "interrupted at iter" in ours[0] and "continue with --resume" in ours[0], err
    stopped_at = load_checkpoint(tmp_path / "ckpt.npz")["iter_num"]
    assert stopped_at >= 1 and f"iter {stopped_at} " in ours[0]
    assert main([str(corpus), "--out-dir", str(tmp_path), "--resume", "--max-iters", str(stopped_at + 2)]) == 0
    assert load_checkpoint(tmp_path / "ckpt.npz")["iter_num"] == stopped_at + 2


@pytest.mark.parametrize("flags, env, message", [
    (["--n-embd", "15"], {}, "--n-embd 15 is not divisible by --n-head 2"),
    (["--resume"], {}, "--resume: no checkpoint at"),
    ([], {"MINIGPT_TEST_BREAK": "setup"}, "rank 1 cannot read the text (on rank 1)"),
])
def test_bad_input_exits_2_on_every_rank_with_the_message_printed_once(
        mpiexec, corpus, tmp_path, flags, env, message):
    t = time.perf_counter()
    r = train_job(mpiexec, 2, corpus, tmp_path, "--batch-size", "4", "--max-iters", "5", *flags, env=env)
    assert r.returncode == 2 and time.perf_counter() - t < 20
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and r.stderr.startswith("error: "), r.stderr
    assert message in r.stderr
    assert [(tmp_path / f"status{i}").read_text() for i in range(2)] == ["2", "2"]


def test_a_crash_on_one_rank_ends_the_job_within_seconds(mpiexec, corpus, tmp_path):
    t = time.perf_counter()
    r = train_job(mpiexec, 2, corpus, tmp_path, "--batch-size", "4", "--max-iters", "100000",
                  env={"MINIGPT_TEST_BREAK": "crash"})
    assert r.returncode != 0 and time.perf_counter() - t < 20, r.stderr
    assert "RuntimeError: rank 1 crashed on purpose" in r.stderr, r.stderr
    assert not (tmp_path / "status0").exists(), r.stdout   # rank 0 did not finish: it was stopped


def test_a_killed_rank_ends_the_job_within_seconds(mpiexec, corpus, tmp_path):
    cmd, env = job(mpiexec, 2, "-c", WRAPPER, str(corpus), "--out-dir", str(tmp_path), *TINY,
                   "--batch-size", "4", "--max-iters", "100000", "--log-interval", "1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("iter"):
                break
        t = time.perf_counter()
        os.kill(int((tmp_path / "pid1").read_text()), signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0 and time.perf_counter() - t < 10


AVERAGE = """
import numpy as np
from minigpt.dist import DistError, world
from minigpt.tokenizer import build_tokenizer
w = world()
grads = {"a": np.full((2, 3), w.rank + 1.0, np.float32), "b": np.arange(4, dtype=np.float32) * (w.rank + 1)}
loss = w.average(grads, np.float32(w.rank))
assert np.all(grads["a"] == 1.5) and np.array_equal(grads["b"], np.arange(4) * 1.5) and loss == 0.5
assert grads["a"].dtype == np.float32 and grads["a"].base is grads["b"].base is not None   # one buffer
params = {"w": np.ones(3, np.float32)}
w.check_in_sync(params)
if w.rank == 1:
    params["w"][2] = np.nextafter(np.float32(1), np.float32(2))      # one bit apart
try:
    w.check_in_sync(params)
except RuntimeError as e:
    print(f"rank {w.rank}: {e}")
tok = build_tokenizer("char", "abc")
w.check_same_data(tok, "ab" * 32)
try:
    w.check_same_data(tok, "ab" * 32 if w.rank == 0 else "cd" * 32)    # another text on rank 1
except DistError as e:
    print(f"rank {w.rank}: {e}")
"""


def test_one_allreduce_averages_the_gradients_and_ranks_with_other_weights_or_data_are_caught(mpiexec):
    r = launch(mpiexec, 2, "-c", AVERAGE)
    assert r.returncode == 0, r.stderr
    for rank in (0, 1):
        assert f"rank {rank}: the weights differ between ranks" in r.stdout
        assert f"rank {rank}: the ranks read different texts or tokenizers" in r.stdout


def test_without_a_launcher_training_is_one_process_and_never_imports_mpi4py(corpus, tmp_path):
    code = (f"import sys; from minigpt.train import main; "
            f"s = main({[str(corpus), '--out-dir', str(tmp_path), *TINY, '--max-iters', '2']!r}); "
            f"assert 'mpi4py' not in sys.modules; sys.exit(s)")
    env = {k: v for k, v in os.environ.items() if k not in dist.LAUNCHER_VARS}
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, timeout=60).returncode == 0


def test_a_launcher_with_two_ranks_but_no_mpi4py_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(dist, "_world", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)           # import mpi4py now fails
    with pytest.raises(dist.DistError, match="pip install -r requirements-mpi.txt"):
        dist.world({"PMI_SIZE": "2", "PMI_RANK": "0"})
    monkeypatch.setattr(dist, "_world", None)
    assert isinstance(dist.world({"PMI_SIZE": "1", "PMI_RANK": "0"}), dist.Solo)   # mpiexec -n 1
    monkeypatch.setattr(dist, "_world", None)
    assert isinstance(dist.world({}), dist.Solo) and not dist.launched_by_mpi({"HOME": "/root"})


def test_a_task_file_trains_on_two_ranks_as_on_one_process_of_twice_the_batch(mpiexec, tmp_path):
    examples = tmp_path / "task.jsonl"
    lines = [json.dumps({"prompt": f"{n} plus one: ", "completion": str(n + 1)}) for n in range(60)]
    examples.write_text("\n".join(lines) + "\n", encoding="utf-8")
    flags = ["--batch-size", "3", "--max-iters", "20", "--eval-examples", "4"]
    ref = tmp_path / "one"
    assert main([str(examples), "--out-dir", str(ref), *TINY, "--batch-size", "6", *flags[2:]]) == 0
    r = train_job(mpiexec, 2, examples, tmp_path / "two", *flags)
    assert r.returncode == 0, r.stderr
    assert_same_run(tmp_path / "two", ref)
    record = json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["eval_examples"] == 4 and 0 <= record["exact_match"] <= 1


@pytest.mark.parametrize("schedule", ["--eval-interval 10", "the eval schedule"])
def test_the_time_budget_under_mpi_is_rank_0s_plan_when_the_ranks_time_themselves_differently(
        mpiexec, corpus, tmp_path, schedule):
    # Rank 1's clock runs 3x fast: its own plan, refits, stop and (without --eval-interval) its
    # own evals by the clock would differ from rank 0's; every save checks that the weights agree.
    flags = ["--batch-size", "6", "--max-time", "0.15", "--log-interval", "10"]
    if schedule == "the eval schedule":                # the default: no --eval-interval given
        cmd = [str(corpus), "--out-dir", str(tmp_path), *_without(TINY, "--eval-interval"), *flags]
        r = launch(mpiexec, 2, "-c", WRAPPER, *cmd, env={"MINIGPT_TEST_CLOCK": "3"})
    else:
        r = train_job(mpiexec, 2, corpus, tmp_path, *flags, env={"MINIGPT_TEST_CLOCK": "3"})
    assert r.returncode == 0, r.stderr
    assert "plan:" in r.stdout and "differ" not in r.stderr
    assert [(tmp_path / f"status{k}").read_text() for k in (0, 1)] == ["0", "0"]
    done = int(r.stdout.split("done: ")[1].split()[0])
    assert load_checkpoint(tmp_path / "ckpt.npz")["iter_num"] == done > 6
    its = [json.loads(line)["iter"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert its[-1] == done and (its[0] == 0) == (schedule == "the eval schedule")   # the curve from step 0
    assert (tmp_path / "log.jsonl").is_file()


def _without(flags, name):
    """flags with `name VALUE` taken out."""
    i = flags.index(name)
    return flags[:i] + flags[i + 2:]


def test_weights_that_differ_at_a_save_keep_rank_0s_checkpoint_and_resume(mpiexec, corpus, tmp_path):
    r = train_job(mpiexec, 2, corpus, tmp_path, "--batch-size", "6", "--max-iters", "20",
                  env={"MINIGPT_TEST_BREAK": "drift"})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "the weights differed between ranks at iter 10" in r.stderr and "--resume" in r.stderr
    assert load_checkpoint(tmp_path / "ckpt.npz")["iter_num"] == 10
    r = train_job(mpiexec, 2, corpus, tmp_path, "--batch-size", "6", "--max-iters", "20", "--resume")
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(tmp_path / "ckpt.npz")["iter_num"] == 20


@pytest.mark.parametrize("flag, value", [("--seed", "7"), ("--lr", "0.001"), ("--eval-interval", "5"),
                                         ("--eval-iters", "3")])
def test_ranks_given_different_flags_refuse_at_the_start_naming_the_flag_and_the_ranks(
        mpiexec, corpus, tmp_path, flag, value):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPIEXEC_TIMEOUT=str(JOB_TIMEOUT_S))
    rank = [sys.executable, "-m", "mpi4py", "-c", WRAPPER, str(corpus), "--out-dir", str(tmp_path),
            *TINY, "--batch-size", "6", "--max-iters", "20"]
    cmd = [mpiexec, "-n", "1", *rank, ":", "-n", "1", *rank, flag, value]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S + 15)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"different flags: {flag} is" in r.stderr and "on rank 1" in r.stderr
    assert not (tmp_path / "ckpt.npz").exists()


def test_ranks_that_resume_different_checkpoints_refuse_at_the_start(mpiexec, corpus, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([str(corpus), "--out-dir", str(a), *TINY, "--batch-size", "12", "--max-iters", "10"]) == 0
    shutil.copytree(a, b)
    with np.load(b / "ckpt.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["param/ln_f.bias"] = arrays["param/ln_f.bias"] + np.float32(1e-3)
    np.savez(b / "ckpt.npz", **arrays)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPIEXEC_TIMEOUT=str(JOB_TIMEOUT_S))
    rank = [sys.executable, "-m", "mpi4py", "-c", WRAPPER, str(corpus), *TINY, "--batch-size", "6",
            "--max-iters", "20", "--resume", "--out-dir"]
    cmd = [mpiexec, "-n", "1", *rank, str(a), ":", "-n", "1", *rank, str(b)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S + 15)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "the ranks start from different weights" in r.stderr
    assert load_checkpoint(a / "ckpt.npz")["iter_num"] == 10
