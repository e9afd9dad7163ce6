"""`python -m minigpt.coursework release|grade ...`: the command line (see __init__.py)."""

if __name__ == "__main__" and not __package__:    # `python minigpt/coursework`: run it as a module
    import os, runpy, sys                           # noqa: E401 (before any relative import)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    runpy.run_module("minigpt.coursework", run_name="__main__", alter_sys=True)
    sys.exit(0)

import argparse
import json
import sys
from pathlib import Path

from ..fileio import atomic_write
from .near_copy import NEAR_COPY
from .sandbox import MEMORY_MB, POOL, SandboxError

VISIBILITIES = ["hidden", "after_due_date", "after_published", "visible"]      # Gradescope's


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minigpt.coursework",
                                     description="Release a student kit, or grade a student's layers.")
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release", help="write the student kit (or the instructor's copy) into OUT_DIR")
    rel.add_argument("out_dir", help="folder for the kit; created if missing")
    rel.add_argument("--with-solutions", action="store_true",
                     help="write the instructor's copy: solved student_layers.py, the course notebook")
    rel.add_argument("--overwrite", action="store_true", help="replace kit files that are already in OUT_DIR")
    gr = sub.add_parser("grade", help="grade the functions a student's FILE.py implements")
    gr.add_argument("file", help="the student's Python file, e.g. student_layers.py")
    gr.add_argument("--json", metavar="RESULTS.json", help="also write Gradescope's results.json here")
    gr.add_argument("--extra-cases", metavar="CASES.json", action="append", default=[],
                    help="hidden cases (shapes and seeds) to add to the kit's; may be repeated")
    gr.add_argument("--timeout", type=float, default=10.0, metavar="S",
                    help="seconds each test case may take (default 10)")
    gr.add_argument("--user", default=None, metavar="NAME|UID[:GID]",
                    help="when run as root: the user the student's code runs as, one that nothing else uses "
                         f"(default: the first uid of {POOL[0]} down to {POOL[-1]} that no other grade holds; "
                         "no account needed); a grade of the same --user waits for it")
    gr.add_argument("--memory", type=int, default=MEMORY_MB, metavar="MB",
                    help=f"address space of each student process in MB (default {MEMORY_MB})")
    gr.add_argument("--visibility", choices=VISIBILITIES, default="after_published",
                    help="Gradescope visibility of the tests of --extra-cases (default after_published)")
    gr.add_argument("--stdout-visibility", choices=VISIBILITIES, default="hidden",
                    help="Gradescope visibility of the grader's own output, the table (default hidden)")
    gr.add_argument("--printed", choices=["tests", "stdout"], default="tests",
                    help="where what the student's code printed is shown: in results.json, each test's output "
                         "(with that test's visibility), and the table; or the table alone (default tests)")
    gr.add_argument("--near-copy", type=float, nargs="?", const=NEAR_COPY, default=None, metavar="RATIO",
                    help="note for the instructor each function whose normalised source is at least RATIO "
                         f"similar to minigpt's own (default {NEAR_COPY} when given); no points change")
    args = parser.parse_args(argv)
    try:
        if args.command == "release":
            return _release(args)
        return _grade(args)
    except UserError as e:
        return _refuse(args, str(e), e.written)
    except OSError as e:                       # no room for the grader's temporary files, ...
        where = f": {e.filename}" if e.filename else ""
        return _refuse(args, f"{e.strerror or e}{where}")
    except KeyboardInterrupt:                  # the children are stopped on the way out
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:                     # noqa: BLE001 (a results.json, whatever happened)
        return _refuse(args, f"the grader failed: {type(e).__name__}: {e}")


def _refuse(args, message, json_failed=False):
    """One line on stderr and exit status 2; with grade --json, a results.json that says why too
    (Gradescope reports a missing one as a failure of the autograder itself)."""
    if args.command == "grade" and args.json and not json_failed:
        try:
            _write_json(args.json, {"score": 0.0, "execution_time": 0.0, "output": f"not graded: {message}",
                                    "tests": []})
        except UserError as e:
            message = str(e)
    print(f"error: {message}", file=sys.stderr)
    return 2


class UserError(Exception):
    """A mistake on the command line or in a file given to it: one line, exit status 2."""
    written = False                             # True when it is about writing results.json itself


def _write_json(path, data):
    text = json.dumps(data, indent=1) + "\n"
    try:
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    except OSError as e:
        error = UserError(str(e) if str(path) in str(e) else f"cannot write {path}: {e}")
        error.written = True
        raise error from None


def _release(args):
    from .release import ReleaseError, release
    try:
        written = release(args.out_dir, with_solutions=args.with_solutions, overwrite=args.overwrite)
    except ReleaseError as e:
        raise UserError(str(e)) from None
    kind = "instructor's copy (with solutions)" if args.with_solutions else "student kit"
    print(f"wrote the {kind} to {args.out_dir}: {', '.join(p.name for p in written)}")
    return 0


def _grade(args):
    from .cases import CaseError, check_unique, read_extra_cases
    from .grade import grade_file
    from .near_copy import near_copies
    from .sandbox import Sandbox
    path = Path(args.file)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not the student's Python file")
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    if path.suffix != ".py":
        raise UserError(f"{path} is not a Python file (.py)")
    if not 0 < args.timeout <= 600:
        raise UserError(f"--timeout must be more than 0 and at most 600 seconds, got {args.timeout:g}")
    try:
        path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    extra = []
    try:
        for cases_path in args.extra_cases:
            extra += read_extra_cases(cases_path)
        check_unique(extra, "--extra-cases")
    except CaseError as e:
        raise UserError(str(e)) from None
    try:
        box = Sandbox.for_this_process(args.user, args.memory)
    except SandboxError as e:
        raise UserError(str(e)) from None
    if args.json:                              # replaced at the end; says so if the grader is stopped
        _write_json(args.json, {"score": 0.0, "execution_time": 0.0, "tests": [],
                                "output": "not graded: the grader did not finish (it was stopped)"})
    report = grade_file(path, extra_cases=extra, timeout=args.timeout, sandbox=box, private=args.extra_cases)
    report.visibility, report.stdout_visibility = args.visibility, args.stdout_visibility
    report.printed_in_tests = args.printed == "tests"
    if args.near_copy is not None:
        report.notes += near_copies(path.read_text(encoding="utf-8"), args.near_copy)
    print(report.table())
    if args.json:
        _write_json(args.json, report.results_json())
        print(f"wrote {args.json}")
    return report.exit_status()


if __name__ == "__main__":
    sys.exit(main())
