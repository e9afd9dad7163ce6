"""The machine's float32 matmul peak: the yardstick for model FLOPs utilisation (MFU).

    python benchmarks/matmul_peak.py [--seconds 0.5]

Prints GFLOP/s of square (n, n) @ (n, n) products through NumPy's BLAS (what
minigpt uses), and through PyTorch when it is installed, measured alternately.
`python -m minigpt.train` divides its achieved FLOP/s by the NumPy figure.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minigpt.flops import measure_matmul_peak  # noqa: E402


def torch_matmul_peak(seconds, n):
    """The same measurement through torch.matmul."""
    import time

    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.matmul(a, b, out=out)
    best, stop = float("inf"), time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        t1 = time.perf_counter()
        best = min(best, t1 - t0)
        if t1 >= stop:
            return 2.0 * n ** 3 / best / 1e9


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
    print(f"{'n':>6} {'numpy GFLOP/s':>14}" + (f" {'torch GFLOP/s':>14}" if torch else ""))
    for n in args.sizes:
        line = f"{n:>6} {measure_matmul_peak(args.seconds, n):>14.1f}"
        if torch:
            line += f" {torch_matmul_peak(args.seconds, n):>14.1f}"
        print(line)


if __name__ == "__main__":
    main()
