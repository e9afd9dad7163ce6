"""The machine's float32 matmul peak: the yardstick for model FLOPs utilisation (MFU).

    python benchmarks/matmul_peak.py [--seconds 0.5]

Prints GFLOP/s of square (n, n) @ (n, n) products: NumPy's `@` with BLAS
threading itself (what minigpt's layers use), and PyTorch when it is installed.
`python -m minigpt.train` divides its achieved FLOP/s by the first
(minigpt.flops.measure_matmul_peak).
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import minigpt  # noqa: E402,F401  (first, as in training: it sets OpenBLAS's thread timeout)
import time  # noqa: E402

import numpy as np  # noqa: E402


def peak(multiply, a, b, seconds):
    """GFLOP/s of the best of repeated multiply(a, b) for `seconds`."""
    multiply(a, b)
    best, stop = float("inf"), time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        multiply(a, b)
        t1 = time.perf_counter()
        best = min(best, t1 - t0)
        if t1 >= stop:
            return 2.0 * a.shape[0] ** 3 / best / 1e9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=0.5, help="time spent per size and library")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048], help="matrix sizes n")
    args = p.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    except ImportError:
        torch = None
    print(f"float32 GFLOP/s, best of {args.seconds} s each; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'n':>6} {'numpy a @ b':>12}" + (f" {'torch':>8}" if torch else ""))
    for n in args.sizes:
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        line = f"{n:>6} {peak(np.matmul, a, b, args.seconds):>12.1f}"
        if torch:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            line += f" {peak(torch.matmul, ta, tb, args.seconds):>8.1f}"
        print(line)


if __name__ == "__main__":
    main()
