"""How long the autograder takes: a complete file, a blank kit and a file with an endless loop.

    python benchmarks/bench_coursework.py              # 5 rounds, alternating the three files
    python benchmarks/bench_coursework.py --repeats 9

Each round grades, one after the other, exactly as `python -m minigpt.coursework
grade FILE` does (student code in child processes: as root, one at a time as its own
user; otherwise two at a time): the instructor's
solution (every function implemented, the whole model checked), the blank student
template, and the solution with an endless loop in gelu_backward (with --timeout 2,
so each of its gelu cases waits out the limit). Prints the median and the range of
the wall time per file. The issue asks for a complete file under 60 s on 2 cores.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from minigpt.coursework import solution, student_template  # noqa: E402
from minigpt.coursework.grade import grade_file  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds (each grades all three files)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(solution.__file__).read_text()
        loop = Path(tmp, "loop.py")
        loop.write_text(source.replace("    return dout * slope\n", "    while True:\n        pass\n"))
        files = {"complete (solution.py)": (Path(solution.__file__), 10.0),
                 "blank (student template)": (Path(student_template.__file__), 10.0),
                 "endless loop in gelu_backward, --timeout 2": (loop, 2.0)}
        times, scores = {name: [] for name in files}, {}
        for _ in range(args.repeats):
            for name, (path, timeout) in files.items():
                t0 = time.perf_counter()
                report = grade_file(path, timeout=timeout)
                times[name].append(time.perf_counter() - t0)
                scores[name] = report.score
        print(f"{os.cpu_count()} cores; {args.repeats} rounds; score of the last round in brackets")
        for name, ts in times.items():
            print(f"{name:<45} median {np.median(ts):6.2f} s  (min {min(ts):.2f}, max {max(ts):.2f})"
                  f"  [{scores[name]:.0f} points]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
