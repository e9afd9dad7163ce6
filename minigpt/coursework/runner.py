"""Runs a student's functions on the grader's cases, in a process of its own.

    python -I runner.py JOB_DIR OUT_DIR   (started by sandbox.py, one process per layer)

JOB_DIR/job.json names the student's file, the functions and the cases; each
case's inputs are in JOB_DIR/in_<id>.npz. For every case this writes the
outputs and gradients to OUT_DIR/out_<id>.npz and one JSON line to
OUT_DIR/results.jsonl, flushed at once, so that what finished survives a
crash or a kill. Nothing here judges a result: grade.py compares, reading
only JSON and npz (no pickle), through sandbox.py's checks.

The file imports only the standard library and NumPy, and so does every job:
minigpt is never loaded here. In the whole-model job (two pipe descriptors after
OUT_DIR) the grader runs minigpt's GPT in its own process and this one only
answers its calls (serve): one student function on the inputs it is sent.
Started by the grader's sandbox, it becomes the student's user under the
limits (sandbox.enter), before it opens anything in OUT_DIR.
Then guard.py hides minigpt from the student's code (see there), and only then is
the student's file executed. Each case runs under a time limit (SIGALRM; the grader's
wall clock backs it with SIGKILL). In this
process (tests, trusted code) a profile hook notes calls into minigpt's files instead.
"""
import importlib.util
import json
import os
import signal
import sys
import threading
import time
import traceback

import numpy as np


class TimeLimit(BaseException):
    """The case ran past its time limit (a BaseException, so `except Exception` cannot eat it)."""


class Student:
    """The student's functions, called under the time limit and the minigpt watch."""

    def __init__(self, functions, own_file=None, watch=()):
        self.functions = functions
        self.own = os.path.realpath(own_file) if own_file else None
        self.watch = [os.path.join(os.path.realpath(d), "") for d in watch]
        self.hit = None                         # a minigpt file that student code called into
        self._seen = {}                         # file name -> is it one of minigpt's
        self.progress = None                    # a file: "case function" before each call
        self.guard = None                       # guard.py's, in the child process
        self.printed = None                     # the capped stdout, in the child process
        self.current = None                     # the function called last
        self.trace = False                      # write each call to progress (the model job)

    def call(self, name, *args):
        fn = self.functions[name]
        self.current = name
        if self.trace:                          # the whole-model job: which function it is in
            self.progress.write(f"model {name}\n")
            self.progress.flush()
        if self.guard is not None:
            seen = len(self.guard.hits())
            try:
                return fn(*args)
            finally:
                hits = self.guard.hits()[seen:]
                if hits and self.hit is None:
                    self.hit = hits[0]
        if not self.watch:
            return fn(*args)
        def hook(frame, event, arg):
            if event == "call" and self.hit is None:
                name = frame.f_code.co_filename
                watched = self._seen.get(name)
                if watched is None:
                    path = os.path.realpath(name)
                    watched = self._seen[name] = path != self.own and any(path.startswith(d) for d in self.watch)
                if watched:
                    self.hit = name
        old = sys.getprofile()
        sys.setprofile(hook)
        try:
            return fn(*args)
        finally:
            sys.setprofile(old)


def load_guard(name="guard"):
    """guard.py (or sandbox.py), loaded by its path from the runner's folder (and kept out of sys.modules)."""
    spec = importlib.util.spec_from_file_location(f"minigpt_grader_{name}",
                                                  os.path.join(os.path.dirname(os.path.realpath(__file__)),
                                                               f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_student(path):
    """{name: function} of a student's file, and None; or None and why it would not load."""
    try:
        spec = importlib.util.spec_from_file_location("student_layers", os.path.realpath(path))
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, os.path.dirname(os.path.realpath(path)))
        spec.loader.exec_module(module)
    except TimeLimit:
        return None, "importing it did not finish within the time limit"
    except BaseException as e:                  # SyntaxError, ImportError, SystemExit, ...
        return None, f"it does not import: {describe(e, path)}"
    return {k: v for k, v in vars(module).items() if callable(v)}, None


def describe(e, own):
    """One line for an exception: its type, its message and the student's line it came from."""
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} (line {e.lineno})"
    line = None
    for frame, lineno in traceback.walk_tb(e.__traceback__):
        if own and os.path.realpath(frame.f_code.co_filename) == os.path.realpath(own):
            line = lineno
    text = " ".join(str(e).split())
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(e).__name__}{': ' + text if text else ''}" + (f" (line {line})" if line else "")


class time_limit:
    """Raise TimeLimit in the main thread after `seconds` (no limit elsewhere or when None)."""

    def __init__(self, seconds):
        self.seconds = seconds if threading.current_thread() is threading.main_thread() else None

    def __enter__(self):
        if self.seconds:
            def ring(signum, frame):
                raise TimeLimit()
            self.old = signal.signal(signal.SIGALRM, ring)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)


def snapshot(obj, depth=0):
    """Copies of every array inside obj (nested tuples, lists, dicts), in a flat list."""
    if isinstance(obj, np.ndarray):
        return [obj.copy()]
    if depth < 6 and isinstance(obj, (tuple, list)):
        return [a for item in obj for a in snapshot(item, depth + 1)]
    if depth < 6 and isinstance(obj, dict):
        return [a for item in obj.values() for a in snapshot(item, depth + 1)]
    return []


def same(a, b):
    """Bytes for bytes (ndarray's own methods: a student's file may replace NumPy's functions)."""
    return len(a) == len(b) and all(x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()
                                    for x, y in zip(a, b))


def as_record(value, key, arrays):
    """Describe a returned value; an array (or a NumPy or Python number) goes into arrays[key]."""
    if value is None:
        return {"kind": "none"}
    if isinstance(value, (np.ndarray, np.generic, float, int)) and not isinstance(value, bool):
        a = np.array(value)                     # a copy: a later call may write into a buffer it reuses
        if a.dtype.kind in "fciub":
            arrays[key] = a
            return {"kind": "array", "key": key}
    if isinstance(value, (tuple, list)):
        return {"kind": "other", "type": type(value).__name__, "length": len(value)}
    return {"kind": "other", "type": type(value).__name__}


def run_layer_case(student, job, case, inputs, arrays):
    """Forward, then the forward again on other inputs (case["again"]), then the backward on the
    FIRST call's cache; returns the JSON record. The second call shows state kept outside the
    cache, and a mask that does not come from the seed. Finite differences of the forward are
    the grader's (it calls the forward over a Channel and differences the outputs itself)."""
    fwd, bwd = job["forward"], job["backward"]
    args = [_arg(spec, inputs) for spec in case["args"]]
    rec = {"id": case["id"], "forward": {}, "backward": {}}
    if fwd not in student.functions or fwd in job["skip"]:
        rec["forward"] = {"status": "missing" if fwd not in student.functions else "skipped"}
        return rec
    ok, result = _run(student, rec["forward"], fwd, args, case, arrays, "forward")
    if not ok:
        return rec
    if not isinstance(result, tuple) or len(result) != 2:
        rec["forward"].update(status="bad_return", type=type(result).__name__,
                              length=len(result) if isinstance(result, (tuple, list)) else None)
        return rec
    out, cache = result
    rec["forward"]["out"] = as_record(out, "out", arrays)
    if case.get("again"):
        again = [_arg(spec, inputs) for spec in case["again"]]
        rec["again"] = {}
        ok, result = _run(student, rec["again"], fwd, again, case, arrays, "again")
        if ok and isinstance(result, tuple) and len(result) == 2:
            rec["again"]["out"] = as_record(result[0], "again_out", arrays)
        elif ok:
            rec["again"]["status"] = "bad_return"
    if bwd not in student.functions or bwd in job["skip"] or case.get("skip_backward"):
        rec["backward"] = {"status": "missing" if bwd not in student.functions else "skipped"}
        return rec
    dout = _arg(case["dout"], inputs)
    cache_before = snapshot(cache)
    ok, grads = _run(student, rec["backward"], bwd, [dout, cache], case, arrays, "backward", args)
    if not ok:
        return rec
    b = rec["backward"]
    if isinstance(dout, np.ndarray):                     # the grader compares it with its own copy
        arrays["backward_dout"] = dout.copy()
    if not same(cache_before, snapshot(cache)):
        b.setdefault("modified", []).append("cache")
    several = isinstance(grads, (tuple, list)) and len(case["grad_args"]) > 1
    grads = list(grads) if several else [grads]         # one gradient: a tuple or list is a wrong type
    b["grads"] = [as_record(g, f"grad_{i}", arrays) for i, g in enumerate(grads)]
    return rec


def _arg(spec, inputs):
    kind = spec[0]
    if kind == "array":
        return inputs[spec[1]].copy()
    if kind == "value":
        return spec[1]
    if kind == "rng":
        return np.random.default_rng(spec[1])
    return None


def _run(student, rec, name, call_args, case, arrays, label, args=None):
    """Call one student function; fill rec with what went wrong. Returns (ok, result). The
    array arguments (`args`, by default call_args), as the call left them, go into arrays as
    <label>_arg_<j>: the grader decides whether the call wrote into them."""
    student.hit = None
    if student.progress:
        student.progress.write(f"{case['id']} {name}\n")
        student.progress.flush()
    t0 = time.perf_counter()
    printed = student.printed.count if student.printed else 0
    if student.printed:
        student.printed.mark()
    result, error = None, None
    try:
        result = student.call(name, *call_args)
    except BaseException as e:               # noqa: BLE001 (student code may raise anything)
        error = e
    rec["seconds"] = round(time.perf_counter() - t0, 4)
    if student.printed and student.printed.count > printed:
        rec["printed"] = student.printed.count - printed
        rec["printed_text"] = "".join(student.printed.recent)
    if student.hit:                          # first: a call into minigpt may be caught and raised anew
        rec.update(status="uses_minigpt", file=os.path.basename(student.hit))
    elif isinstance(error, NotImplementedError):
        rec["status"] = "not_implemented"
    elif isinstance(error, TimeLimit):
        rec["status"] = "timeout"
    elif error is not None:
        rec.update(status="error", message=describe(error, student.own))
    if student.hit or error is not None:
        return False, None
    for j, a in enumerate(call_args if args is None else args):
        if isinstance(a, np.ndarray):
            arrays[f"{label}_arg_{j}"] = a.copy()
    rec["status"] = "ok"
    return True, result


def run_job(job_dir, functions=None, watch=None, out_dir=None, fds=None):
    """Run job_dir/job.json, writing into out_dir (default job_dir); functions (in-process use)
    replaces loading the student's file. fds: the whole-model job's two pipe ends (requests
    in, replies out): this process then only answers the grader's calls (serve)."""
    out_dir = out_dir or job_dir
    with open(os.path.join(job_dir, "job.json"), encoding="utf-8") as f:
        job = json.load(f)
    channel = load_guard("sandbox") if fds else None
    if job.get("sandbox"):                      # the student's user and limits, from here on
        load_guard("sandbox").enter(job["sandbox"])
    with open(os.path.join(out_dir, "results.jsonl"), "a", encoding="utf-8") as results, \
            open(os.path.join(out_dir, "progress.txt"), "a", encoding="utf-8") as progress:
        def emit(rec):
            results.write(json.dumps(rec) + "\n")
            results.flush()
        guard = printed = None
        if functions is None:
            guard_module = load_guard()
            guard = guard_module.install(job["package"], job["student"])
            printed = sys.stdout = sys.stderr = guard_module.CappedOutput()
            with time_limit(job["timeout"]):
                functions, error = load_student(job["student"])
            if error:
                emit({"id": "import", "error": error})
                if channel:
                    channel.child_send(fds[1], {"status": "error", "message": error[:300]})
                return
            emit({"id": "loaded"})              # for the grader's wall clock: the cases start now
        student = Student(functions, job.get("student"), job.get("watch", []) if watch is None else watch)
        student.progress, student.guard, student.printed = progress, guard, printed
        try:
            if channel:
                channel.child_send(fds[1], {"status": "loaded"})
                serve(Local(student, job["timeout"]), channel, *fds)
                return
            for case in job["cases"]:
                arrays = {}
                with np.load(os.path.join(job_dir, f"in_{case['id']}.npz"), allow_pickle=False) as data:
                    inputs = {k: data[k] for k in data.files}
                try:
                    with time_limit(job["timeout"]):
                        rec = run_layer_case(student, job, case, inputs, arrays)
                except TimeLimit:                 # between two student calls
                    rec = {"id": case["id"], "forward": {"status": "timeout"}}
                np.savez(os.path.join(out_dir, f"out_{case['id']}.npz"), **arrays)
                emit(rec)
        finally:
            if printed is not None and printed.count:
                emit({"id": "printed", "count": printed.count, "head": "".join(printed.kept)})


def model_time_limit(timeout):
    """Seconds for the whole-model job: about 170 forward passes, mostly the grader's own work."""
    return max(3 * timeout, 60.0)


class Stopped(Exception):
    """A student's function gave the whole model no usable answer: status (timeout, error,
    uses_minigpt, crashed), the function, and what to say."""

    def __init__(self, status, function, message="", file=""):
        super().__init__(message)
        self.status, self.function, self.message, self.file = status, function, message, file


class Seed(int):
    """An argument that becomes np.random.default_rng(seed) where the student's function runs."""


class Local:
    """Calls the student's functions for the whole-model check, keeping their caches here
    under the grader's handles (in the student's process, or in-process for trusted code)."""

    def __init__(self, student, timeout):
        self.student, self.timeout, self.caches = student, timeout, {}

    def forward(self, name, args, handle):
        result = self._call(name, *[a.copy() if isinstance(a, np.ndarray) else
                                    np.random.default_rng(int(a)) if isinstance(a, Seed) else a for a in args])
        if not isinstance(result, tuple) or len(result) != 2:
            raise Stopped("bad_return", name, f"a bad return value: {type(result).__name__}, not (out, cache)")
        self.caches[handle] = result[1]
        return _array(result[0])

    def backward(self, name, dout, handle, count):
        if handle not in self.caches:
            raise Stopped("error", name, "no cache of its forward")
        grads = self._call(name, dout.copy() if isinstance(dout, np.ndarray) else dout, self.caches[handle])
        grads = list(grads) if isinstance(grads, (tuple, list)) and count > 1 else [grads]
        return [_array(g) for g in grads]

    def _call(self, name, *args):
        student = self.student
        student.hit = None
        try:
            with time_limit(self.timeout):
                result = student.call(name, *args)
        except TimeLimit:
            raise Stopped("timeout", name) from None
        except BaseException as e:              # noqa: BLE001 (student code may raise anything)
            if not student.hit:
                raise Stopped("error", name, describe(e, student.own)) from None
        if student.hit:
            raise Stopped("uses_minigpt", name, file=os.path.basename(student.hit))
        return result


def _array(value):
    """An array for a returned array or number; anything else as it came."""
    if isinstance(value, (np.ndarray, np.generic, float, int)) and not isinstance(value, bool):
        return np.array(value)
    return value


def serve(local, channel, reading, writing):
    """The whole-model job in the student's process: answer each of the grader's calls with the
    student function's outputs (or why there are none) until the grader closes the pipe."""
    while True:
        head, arrays = channel.child_receive(reading)
        if head is None:
            return
        name = str(head.get("fn"))
        try:
            if name.endswith("_forward"):
                args = [arrays[v] if kind == "array" else Seed(v) if kind == "rng" else v for kind, v in head["args"]]
                values = [local.forward(name, args, head["handle"])]
            else:
                values = local.backward(name, arrays[0] if arrays else head.get("dout"), head["handle"], head["count"])
            send = [v for v in values if v is not None]
            for v in send:
                if not isinstance(v, np.ndarray) or v.dtype.str not in channel.WIRE_DTYPES:
                    raise Stopped("bad_return", name, "a bad return value: " + (
                        f"a {v.dtype} array" if isinstance(v, np.ndarray) else type(v).__name__))
            index = iter(range(len(send)))
            channel.child_send(writing, {"status": "ok", "values": [None if v is None else next(index)
                                                                   for v in values]}, send)
        except Stopped as stop:
            channel.child_send(writing, {"status": stop.status, "message": stop.message[:300],
                                         "file": stop.file[:80]})


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)
    run_job(sys.argv[1], out_dir=sys.argv[2] if len(sys.argv) > 2 else None,
            fds=(int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else None)
