"""Data-parallel speed: 1 process x 2 threads against 2 MPI ranks x 1 thread, same global batch.

    python benchmarks/bench_dist.py                     # configs A and B, 3 rounds, and the 124M Allreduce
    python benchmarks/bench_dist.py --configs A --rounds 5 --no-124m

Training: the real command line, `python -m minigpt.train shakespeare.txt` with the model
sizes of benchmarks/bench_train.py's configs, once as one process with the config's batch
(BLAS and minigpt's row threads: 2) and once as `mpiexec -n 2 ... --batch-size B/2`
(OPENBLAS_NUM_THREADS=1 per rank). The two alternate, round after round, so a busy machine
slows both alike; tokens/s is the median over log windows (the first one, warm-up, dropped).

Collectives: a worker run under `mpiexec -n 2` times `dist.MPIWorld.average` on a gradient
dict of each config's shapes (copy into the flat buffer, one in-place Allreduce, scale by
1/N; the views are the gradients, so no copy back out), the Allreduce alone, what a copy
back out would add, and the per-step control collectives (two `any`, one `from_root`).
Also the Allreduce of a GPT-2 124M-parameter gradient (float32, 498 MB).
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import minigpt  # noqa: E402,F401  (before NumPy, as in training)
import numpy as np  # noqa: E402

from bench_train import CONFIGS  # noqa: E402

GPT2_124M = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257)
STEPS = {"A": (20, 4), "B": (2, 4)}        # log interval, timed windows (plus one warm-up window)


def mpiexec():
    exe = shutil.which("mpiexec", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if exe is None:
        sys.exit("bench_dist.py needs mpiexec: pip install -r requirements-mpi.txt")
    return exe


# ------------------------------------------------------------------ the worker (under mpiexec)

def median_ms(fn, reps):
    fn()                                           # warm up (first touch, buffers)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def worker(sizes, reps):
    """Rank 0 prints one JSON line: ms for average(), Allreduce alone, copy out, control collectives."""
    from minigpt import dist
    from minigpt.model import GPTConfig, param_shapes
    w = dist.world()
    shapes = param_shapes(GPTConfig(**sizes))
    rng = np.random.default_rng(w.rank)
    grads = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
    fresh = dict(grads)                            # backward makes new arrays each step
    loss = np.float32(1.0)
    result = {"params": sum(g.size for g in grads.values())}
    w.comm.Barrier()
    result["average_ms"] = median_ms(lambda: w.average(dict(fresh), loss), reps)
    flat, views = w._buffer(grads)
    result["allreduce_ms"] = median_ms(lambda: w.comm.Allreduce(w.MPI.IN_PLACE, flat, op=w.MPI.SUM), reps)
    out = {k: np.empty_like(g) for k, g in grads.items()}
    result["copy_out_ms"] = median_ms(lambda: [np.copyto(out[k], views[k]) for k in views], reps)
    result["control_ms"] = median_ms(lambda: (w.any(False), w.any(False), w.from_root(False)), reps * 20)
    if w.is_root:
        print(json.dumps(result), flush=True)


# ------------------------------------------------------------------ the parent

def train_cmd(name, out, ranks):
    sizes, B, _, _ = CONFIGS[name]
    interval, windows = STEPS[name]
    flags = ["--n-layer", sizes["n_layer"], "--n-head", sizes["n_head"], "--n-embd", sizes["n_embd"],
             "--block-size", sizes["block_size"], "--batch-size", B // ranks,
             "--max-iters", interval * (windows + 1), "--log-interval", interval, "--eval-interval", 10**6,
             "--eval-iters", 1, "--sample-tokens", 0, "--max-time", 0, "--out-dir", out, "--overwrite"]
    cmd = [sys.executable, "-m", "minigpt.train", str(ROOT / "shakespeare.txt"), *map(str, flags)]
    env = dict(os.environ)
    if ranks > 1:
        cmd = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "mpi4py", *cmd[1:]]
        env.update(OPENBLAS_NUM_THREADS="1", MPIEXEC_TIMEOUT="900")
    return cmd, env


def tokens_per_s(name, out, ranks):
    """Median tokens/s over the log windows after the first (warm-up) one."""
    cmd, env = train_cmd(name, out, ranks)
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    rates = [float(m.replace(",", "")) for m in re.findall(r"\| ([\d,]+) tok/s", r.stdout)]
    return statistics.median(rates[1:])


def collectives(sizes, reps):
    cmd = [mpiexec(), "-n", "2", sys.executable, __file__, "--worker", json.dumps(sizes), "--reps", str(reps)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPIEXEC_TIMEOUT="900")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["A", "B"], choices=sorted(STEPS))
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per config (default: 3)")
    p.add_argument("--no-124m", action="store_true", help="skip the 124M-parameter Allreduce")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--reps", type=int, default=20, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(json.loads(args.worker), args.reps)
    print(f"# bench_dist.py, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
          f"python {sys.version.split()[0]}, numpy {np.__version__}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_dist-"))
    for name in args.configs:
        sizes, B, _, _ = CONFIGS[name]
        rates = {1: [], 2: []}
        for _ in range(args.rounds):
            for ranks in (1, 2):
                rates[ranks].append(tokens_per_s(name, tmp / f"{name}{ranks}", ranks))
        one, two = (statistics.median(rates[k]) for k in (1, 2))
        c = collectives(sizes, 20)
        step_ms = 1000 * B * sizes["block_size"] / two
        print(f"\nconfig {name}: {sizes['n_layer']} layers x {sizes['n_embd']}, block {sizes['block_size']}, "
              f"global batch {B} ({c['params']:,} parameters), {args.rounds} rounds")
        print(f"  1 process x 2 threads, batch {B}: {one:9,.0f} tok/s  (rounds: {', '.join(f'{r:,.0f}' for r in rates[1])})")
        print(f"  2 ranks x 1 thread, batch {B // 2} each: {two:6,.0f} tok/s  "
              f"(rounds: {', '.join(f'{r:,.0f}' for r in rates[2])})  ratio {two / one:.2f}x")
        print(f"  per step of {step_ms:.1f} ms on 2 ranks: average() {c['average_ms']:.2f} ms "
              f"({100 * c['average_ms'] / step_ms:.1f}%), of which Allreduce {c['allreduce_ms']:.2f} ms; "
              f"control collectives {c['control_ms']:.3f} ms; a copy back out would add {c['copy_out_ms']:.2f} ms")
    if not args.no_124m:
        c = collectives(GPT2_124M, 5)
        mb = 4 * c["params"] / 1e6
        print(f"\nGPT-2 124M gradient ({c['params']:,} float32, {mb:.0f} MB), 2 ranks: Allreduce "
              f"{c['allreduce_ms']:.0f} ms ({mb / c['allreduce_ms']:.2f} GB/s of buffer), average() "
              f"{c['average_ms']:.0f} ms, a copy back out would add {c['copy_out_ms']:.0f} ms")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
