"""What an eval costs a training run, in training steps: the default model on shakespeare.txt.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_eval.py
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_eval.py --repeats 7 --eval-iters 100

Each repeat times one whole eval as the training loop runs it (train and val loss over
--eval-iters batches each, ckpt.npz, metrics.jsonl, log.jsonl, loss.png, a 100-token sample),
then --steps training steps, back to back, and reports the medians and the eval's cost in
steps. The default run evaluates at the start (a tenth of the batches), at most at each tenth
of the run and at the end, keeping evals to about a twentieth of the time (docs/training.md).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minigpt import train                          # noqa: E402
from minigpt.progress import EvalSchedule, TimeBudget    # noqa: E402
from minigpt.run import make_run                   # noqa: E402
from minigpt.train_flags import check_args, parse_args   # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="eval + steps measurements (default 5)")
    p.add_argument("--steps", type=int, default=50, help="training steps timed per repeat (default 50)")
    p.add_argument("--eval-iters", type=int, default=100, help="batches per split (default 100)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as out:
        args, explicit = parse_args([os.path.join(ROOT, "shakespeare.txt"), "--out-dir", out, "--max-time", "0",
                                     "--max-iters", "1", "--eval-iters", str(a.eval_iters)])
        run = make_run(args, explicit, time.perf_counter(), check_args)
        budget = TimeBudget(float("inf"), None, a.eval_iters, 1, 0, schedule=EvalSchedule())
        train.evaluate(run, 1e-3, 0.0, budget)     # the first imports matplotlib: not timed
        evals, steps = [], []
        for _ in range(a.repeats):
            t = time.perf_counter()
            train.evaluate(run, 1e-3, 0.0, budget)
            evals.append(time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(a.steps):
                train.train_step(run, 1e-3)
            steps.append((time.perf_counter() - t) / a.steps)
    e, s = statistics.median(evals), statistics.median(steps)
    print(f"eval {e:.2f} s, step {1000 * s:.1f} ms (medians of {a.repeats}): one eval costs {e / s:.0f} steps",
          file=sys.stderr)


if __name__ == "__main__":
    main()
