"""Grade a student's layers: every case of every function, then the whole model.

    report = grade_file("student_layers.py", timeout=10)    # student code in child processes
    report = grade_functions({"gelu_forward": f, ...})      # in this process (tests, trusted code)
    print(report.table()); report.results_json()            # Gradescope's results.json

One child process per layer runs the student's code (sandbox.py: as its own user
when the grader is root, under limits, killed by the wall clock); it gets its
inputs as .npz files and hands back .npz and JSON lines, read here without
pickle and checked before use. A function that uses minigpt's own code (seen in
the source, or caught calling into minigpt's files at run time) earns nothing.
"""
import json
import math
import sys
import tempfile
from contextlib import contextmanager
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import runner
from .cases import FUNCTIONS, LAYERS, POINTS, builtin_cases
from .guard import CappedOutput
from .sandbox import STEP_SLACK, Job, Sandbox, last_call, read_results
from .judge import judge_backward, judge_forward
from .model_check import Here, ModelCheck, Remote, Stopped
from .verdicts import Test, import_line, model_test
from .source_check import uses_minigpt
from .recheck import recheck

PACKAGE_DIR = Path(__file__).resolve().parents[1]          # minigpt/


def coarse_seconds(seconds):
    """A grade's time as results.json shows it, always: rounded up to 10 s (student code that
    sleeps must not spell out what it saw in a hidden case)."""
    return float(10 * math.ceil(seconds / 10))


@dataclass
class Report:
    tests: list = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""              # about the whole run, e.g. what the student's code printed
    printed: str = ""           # how that began: in the table (the grader's stdout) only
    visibility: str = "after_published"     # Gradescope's, for the tests of hidden cases
    stdout_visibility: str = "hidden"       # Gradescope's, for the grader's stdout (the table)
    printed_in_tests: bool = True           # each test's output shows what was printed during it
    notes: list = field(default_factory=list)   # for the instructor only (near-copies of minigpt)
    import_error: str = ""      # the one line that says why the file would not load

    @property
    def score(self):
        return round(sum(t.score for t in self.tests), 9)       # shares such as 4/3 add up to 99.99999999999993

    @property
    def max_score(self):
        return round(sum(t.max_score for t in self.tests), 9)

    def functions(self):
        """{function: (points, max, status, first failure)} in the contract's order, then model.
        A function's line begins "k of n cases pass" (with how many of them are hidden)."""
        rows = {}
        for name in FUNCTIONS + ["model"]:
            tests = [t for t in self.tests if t.function == name]
            if not tests:
                continue
            first = next((t for t in tests if t.status != "pass"), None)
            statuses = {t.status for t in tests}
            status = ("pass" if statuses == {"pass"} else "not implemented"
                      if statuses <= {"not implemented", "not graded"} else "fail")
            where = "a hidden case" if first and first.hidden else first.name.split(": ", 1)[1] if first else ""
            why = f"{where}: {first.output}" if first and status == "fail" else \
                (first.output if first else "")
            if status == "pass" and sum(t.score for t in tests) < sum(t.max_score for t in tests):
                why = tests[0].output                  # the model, with some of the layers
            if name != "model" and status != "not implemented" and not self.import_error:
                hidden = sum(t.hidden for t in tests)
                count = (f"{sum(t.status == 'pass' for t in tests)} of {len(tests)} cases pass"
                         + (f" ({hidden} hidden)" if hidden else ""))
                why = f"{count}; {why}" if why else count
            rows[name] = (sum(t.score for t in tests), sum(t.max_score for t in tests), status,
                          why.split("\n")[0])
        return rows

    def exit_status(self):
        """0 when at least one function is implemented and every implemented one passes."""
        statuses = [row[2] for row in self.functions().values()]
        return 0 if "pass" in statuses and "fail" not in statuses else 1

    def table(self):
        rows = self.functions()
        width = max(len(n) for n in rows)
        lines = [f"{'function':<{width}}  {'points':>6}  {'max':>5}  first failure"]
        if self.import_error:                       # one line, not one per function
            lines = [f"student file: {self.import_error}"]
        for name, (points, most, status, why) in rows.items():
            if not self.import_error:
                lines.append(f"{name:<{width}}  {points:>6.1f}  {most:>5.1f}  {why}".rstrip())
        hidden = sum(t.hidden for t in self.tests if t.function.endswith("_forward"))
        lines.append(f"{'total':<{width}}  {self.score:>6.1f}  {self.max_score:>5.1f}  "
                     f"({sum(r[2] == 'pass' for r in rows.values())} of {len(rows)} pass; "
                     + (f"{hidden} hidden cases from --extra-cases ran; " if hidden else "")
                     + f"graded in {self.seconds:.1f} s)")
        if self.note:
            lines.append(self.note.lstrip("; ") + self.printed)
        lines += [f"note for the instructor: {n}" for n in self.notes]
        return "\n".join(lines)

    def results_json(self):
        """Gradescope's autograder results: score, and one entry per test. The max_scores are
        rounded to 4 decimals, the last test of each function taking the remainder, and the
        last test of all the floating-point remainder, so that they add up (in file order) to
        exactly the maximum."""
        maxes = [round(t.max_score, 4) for t in self.tests]
        for function in {t.function for t in self.tests}:
            mine = [i for i, t in enumerate(self.tests) if t.function == function]
            total = round(sum(self.tests[i].max_score for i in mine), 9)
            maxes[mine[-1]] = round(total - sum(maxes[i] for i in mine[:-1]), 4)
        if maxes:
            maxes[-1] = round(self.max_score - sum(maxes[:-1]), 4)      # 16.0, never 16.00000000000007
        printed = lambda t: (f"\nyour code printed here: {t.printed!r}"   # noqa: E731
                             if t.printed and self.printed_in_tests else "")
        tests = [{"name": t.name, "max_score": most,
                  "score": most if t.score == t.max_score else round(t.score, 4),
                  "status": "passed" if t.status == "pass" else "failed",
                  "output": (t.output or "passed") + printed(t),
                  **({"visibility": self.visibility} if t.hidden else {})}
                 for t, most in zip(self.tests, maxes)]
        if self.notes:                            # seen by the instructor alone
            tests.append({"name": "note for the instructor", "score": 0.0, "max_score": 0.0,
                          "status": "passed", "output": "\n".join(self.notes), "visibility": "hidden"})
        head = f"{self.score:.1f} of {self.max_score:.1f} points"
        hidden = [t for t in self.tests if t.hidden]
        if hidden:                                # the top-level output is always visible
            shown = [t for t in self.tests if not t.hidden]
            head = (f"{sum(t.score for t in shown):.1f} of {sum(t.max_score for t in shown):.1f} points on the "
                    f"tests shown now; {len(hidden)} tests of hidden cases count too, and are shown after release")
        if self.import_error:
            head += f"; student file: {self.import_error}"
        return {"score": round(self.score, 4), "execution_time": coarse_seconds(self.seconds),
                "output": head + self.note, "stdout_visibility": self.stdout_visibility, "tests": tests}


def grade_file(path, extra_cases=(), timeout=10.0, workers=2, sandbox=None, private=()):
    """Grade the file at `path`, its code running in child processes.
    sandbox: how they run (a sandbox.Sandbox; by default Sandbox.for_this_process());
    private: files the student's code must not read (the hidden-cases files), besides
    minigpt's package and, in a checkout, its notebooks."""
    path = Path(path).resolve()
    try:
        flagged = uses_minigpt(path.read_text(encoding="utf-8"))
    except SyntaxError:
        flagged = {}                        # the child reports it, with its line
    box = sandbox or Sandbox.for_this_process()
    base = dict(student=str(path), watch=[], root=str(PACKAGE_DIR.parent), package=str(PACKAGE_DIR))
    course = [PACKAGE_DIR.parent / "notebooks"] if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else []
    try:
        with box.hidden([PACKAGE_DIR, *course, *other_copies(), *private]):         # the course notebook holds solutions too
            return _grade(base, None, flagged, extra_cases, timeout, 1 if box.isolated else workers, box)
    finally:
        if sandbox is None:
            box.close()


def other_copies():
    """Other copies of minigpt the grader's Python can see (site-packages, folders on sys.path) and
    the checkout's .git: as root they are hidden too, so the kernel refuses them whatever the guard misses."""
    found = {(Path(p) / "minigpt").resolve() for p in sys.path if p and (Path(p) / "minigpt" / "layers.py").is_file()}
    found.discard(PACKAGE_DIR)
    git = PACKAGE_DIR.parent / ".git"
    return sorted(found) + ([git] if git.is_dir() else [])


def grade_functions(functions, extra_cases=(), timeout=10.0, source=None):
    """Grade functions given as {name: callable}, here in this process (trusted code, no child).
    source: the file they came from, to apply the same minigpt checks as grade_file."""
    flagged = uses_minigpt(Path(source).read_text(encoding="utf-8")) if source else {}
    watch = [str(PACKAGE_DIR)] if source else []
    return _grade(dict(student=str(source) if source else None, watch=watch, root=str(PACKAGE_DIR.parent)),
                  functions, flagged,
                  extra_cases, timeout, 1, None)


def _grade(base, functions, flagged, extra_cases, timeout, workers, box):
    with np.errstate(all="ignore"):          # comparing a student's inf or NaN prints nothing
        return _grade_quietly(base, functions, flagged, extra_cases, timeout, workers, box)


def _grade_quietly(base, functions, flagged, extra_cases, timeout, workers, box):
    t0 = time.perf_counter()
    cases = builtin_cases() + list(extra_cases)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="minigpt-grade-") as tmp:
        jobs = [(layer, [c for c in cases if c.layer == layer]) for layer in LAYERS]
        skip = sorted(n for n in flagged if n in FUNCTIONS)
        run = lambda item: _run_layer(tmp, base, functions, skip, timeout, box, *item)   # noqa: E731
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                outcomes = list(pool.map(run, jobs))
        else:
            outcomes = [run(item) for item in jobs]
        recheck(jobs, outcomes, timeout, lambda: _calls(tmp, base, functions, box, timeout))
        printed = []
        for (layer, layer_cases), (records, import_error) in zip(jobs, outcomes):
            printed += records.pop("printed", [])
            if import_error and not report.import_error:
                report.import_error = import_line(import_error, timeout)
            report.tests += _layer_tests(layer, layer_cases, records, import_error, flagged, timeout)
        until = time.monotonic() + model_time_budget(timeout)

        def run(swap, attempt, fd=True):                 # one run of the whole-model job: its record
            return _run_model(tmp, base, functions, swap, timeout, attempt, box, fd, until)
        report.tests.append(model_test(run, report, timeout))
    report.seconds = time.perf_counter() - t0
    if printed:
        count = sum(n for n, _ in printed)
        head = " ".join(" ".join(h.split()) for _, h in printed)
        # results.json's output is always visible: it says only that something was printed (a count
        # would carry what a hidden case's inputs were); the count and the text go to the table
        report.note = "; your code printed to stdout or stderr"
        report.printed = (f" ({count:,} characters; the grader keeps the first {CappedOutput.KEEP:,} of each "
                          f"process); they began: {head[:300]!r}")
    return report


def _job(tmp, base, box, name):
    """(Job, job.json's base) for one child: its inbox holds copies of the runner, the guard
    and the student's file (the child reads nothing of the grader's own)."""
    if box is None:                           # in this process: one folder
        folder = Path(tmp) / name
        folder.mkdir()
        return Job(folder, folder), dict(base)
    here = Path(runner.__file__).parent
    job = box.job(tmp, name, [here / "runner.py", here / "guard.py", here / "sandbox.py", base["student"]])
    return job, dict(base, student=str(job.inbox / Path(base["student"]).name))


def _run_layer(tmp, base, functions, skip, timeout, box, layer, layer_cases):
    """Write one layer's job, run it, and read back {case id: (record, arrays)}."""
    job_dir, base = _job(tmp, base, box, layer)
    job = dict(base, kind="layer", forward=f"{layer}_forward", backward=f"{layer}_backward",
               timeout=timeout, skip=skip, cases=[])
    sizes = {str(i): {g: case.arrays[case.args[g][1]].size for g in case.grad_args if case.args[g][0] == "array"}
             for i, case in enumerate(layer_cases)}
    for i, case in enumerate(layer_cases):
        np.savez(job_dir.inbox / f"in_{i}.npz", **case.arrays)
        job["cases"].append(dict(id=str(i), args=case.args, arg_names=case.arg_names,
                                 grad_args=case.grad_args, dout=case.dout,
                                 fd=case.fd, again=case.again_args))
    all_cases = job["cases"]
    pending, crashed = list(all_cases), {}               # case id -> (function, why)
    deadline = time.monotonic() + layer_time_limit(timeout, len(all_cases))   # for all its runs together
    for _ in range(2 * len(all_cases) + 1):
        job["cases"] = pending
        left = deadline - time.monotonic()
        if left <= 0:
            break
        killed, code = _execute(job_dir, job, functions, box, limit=min(layer_time_limit(timeout, len(pending)), left),
                                step=timeout + STEP_SLACK, steps=len(pending) + 2,
                                ids={c["id"] for c in pending})
        records, import_error = read_results(job_dir, sizes, _trusted(job_dir))
        if killed and not records.get("loaded") and not import_error:   # a signal mask held the import up
            import_error = "importing it did not finish within the time limit"
        pending = [c for c in all_cases if c["id"] not in records]
        if import_error or not pending:
            break
        # the process died (or was killed) in the middle of a case: blame the call it was in,
        # and run the rest again (that case's forward alone, when its backward was the culprit)
        culprit = pending[0]
        function = last_call(job_dir, culprit["id"]) or job["forward"]
        why = "timeout" if killed else f"exit status {code}"
        crashed[culprit["id"]] = (function, why)
        if function == job["forward"] or culprit.get("skip_backward"):
            _append(job_dir, {"id": culprit["id"], "forward": {"status": "crashed", "why": why}})
            pending = pending[1:]
        else:
            culprit["skip_backward"] = True
    for case in pending if not import_error else ():     # the job's time ran out: the rest are timeouts
        if case["id"] not in read_results(job_dir, sizes, _trusted(job_dir))[0]:
            _append(job_dir, {"id": case["id"], "forward": {"status": "crashed", "why": "timeout"}})
    records, import_error = read_results(job_dir, sizes, _trusted(job_dir))[0], import_error
    records.pop("loaded", None)
    for case_id, (function, why) in crashed.items():
        if function == job["backward"] and case_id in records:
            records[case_id][0]["backward"] = {"status": "crashed", "why": why}
    return records, import_error


def _append(job_dir, record):
    """A record of the grader's own (a case that crashed), kept in the inbox the child cannot write."""
    with open(job_dir.inbox / "grader.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _trusted(job_dir):
    path = job_dir.inbox / "grader.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def layer_time_limit(timeout, cases):
    """Seconds a layer's job may take in all, its restarts after a crash included."""
    return timeout * (cases + 1) + 10


def model_time_budget(timeout):
    """Seconds all the whole-model runs of a grade may take together."""
    return 2 * (runner.model_time_limit(timeout) + 15)


def _execute(job_dir, job, functions, box, limit, step=None, steps=0, ids=None):
    (job_dir.inbox / "job.json").write_text(json.dumps(job), encoding="utf-8")
    if functions is not None:
        runner.run_job(str(job_dir.inbox), functions, out_dir=str(job_dir.outbox))
        return False, 0
    job["sandbox"] = box.spec(limit)
    (job_dir.inbox / "job.json").write_text(json.dumps(job), encoding="utf-8")
    return box.run(job_dir, limit, step, steps, ids)


def _layer_tests(layer, layer_cases, records, import_error, flagged, timeout):
    tests = []
    for way in ("forward", "backward"):
        function = f"{layer}_{way}"
        share = POINTS[way] / len(layer_cases)
        for i, case in enumerate(layer_cases):
            rec, arrays = records.get(str(i), (None, {}))
            if import_error:
                status, why = "fail", "not graded: your file does not import (the first line says why)"
            elif function in flagged:
                status, why = "fail", f"uses minigpt's own code ({flagged[function]}): it earns no points"
            elif rec is None:
                status, why = "fail", (f"did not finish within {timeout:g} s, or ended the grader's process "
                                       "(an endless loop? sys.exit?)")
            elif way == "forward":
                status, why = judge_forward(case, rec.get("forward", {}), arrays, timeout, rec.get("again"))
            else:
                fstatus, fwhy = judge_forward(case, rec.get("forward", {}), arrays, timeout, rec.get("again"))
                status, why = judge_backward(case, rec.get("backward", {}), arrays, fstatus, timeout, fwhy)
            said = (rec or {}).get(way, {}).get("printed_text", "")
            tests.append(Test(f"{function}: {case.name}", function, share if status == "pass" else 0.0,
                              share, status, why, printed=said, hidden=case.name.startswith("hidden: ")))
    return tests


@contextmanager
def _calls(tmp, base, functions, box, timeout):
    """A caller of the student's functions for the grader's finite differences: over a Channel
    to a child of its own (its limit: the whole model's), or here for trusted code."""
    if functions is not None:
        yield Here(runner.Local(runner.Student(functions, base.get("student"), base.get("watch", [])), timeout))
        return
    job_dir, base = _job(tmp, base, box, "differences")
    limit = runner.model_time_limit(timeout)
    job = dict(base, kind="model", timeout=timeout, skip=[], sandbox=box.spec(limit))
    (job_dir.inbox / "job.json").write_text(json.dumps(job), encoding="utf-8")
    with box.serve(job_dir, limit, step=timeout + STEP_SLACK) as channel:
        yield Remote(channel, timeout + STEP_SLACK)


def _run_model(tmp, base, functions, swap, timeout, attempt, box, fd=True, until=None):
    """One run of the whole-model check: its record (with "function": the student function it
    stopped in, when it did not finish). fd False: no finite differences (a quick run).
    minigpt's GPT runs here; the student's functions run in a child that answers its calls."""
    check, rec = ModelCheck(seed=0), {}
    if functions is not None:                        # in this process (trusted code)
        student = runner.Student(functions, base.get("student"), base.get("watch", []))
        check.run(Here(runner.Local(student, timeout)), swap, rec, fd)
        return rec
    limit = runner.model_time_limit(timeout) + 15
    if until is not None:                            # the grade's budget for all the model's runs
        limit = min(limit, until - time.monotonic())
        if limit < 1:
            return {"status": "timeout", "function": ""}
    job_dir, base = _job(tmp, base, box, f"model{attempt or ''}")
    job = dict(base, kind="model", timeout=timeout, skip=[], sandbox=box.spec(limit))
    (job_dir.inbox / "job.json").write_text(json.dumps(job), encoding="utf-8")
    with box.serve(job_dir, limit, step=timeout + STEP_SLACK) as channel:
        try:
            caller = Remote(channel, timeout + STEP_SLACK)
        except Stopped as stop:                      # the file did not load (the layer rows say why)
            return {"status": stop.status, "function": "", "message": stop.message}
        check.run(caller, swap, rec, fd)
    return rec
