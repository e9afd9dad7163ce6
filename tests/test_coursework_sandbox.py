"""The grader's security boundary (minigpt/coursework/sandbox.py): each test performs an attack
on the grader and checks that it fails, that results.json is written and well-formed, that
the grader's files are as they were and that no process of the student's user survives.
The attacks that need the student's own user run as root (CI runs the suite as root)."""
import hashlib
import inspect
import json
import os
import re
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from minigpt.coursework import sandbox, solution
from minigpt.coursework.__main__ import main
from minigpt.coursework.grade import PACKAGE_DIR, Report, grade_file
from minigpt.coursework.grade import Test as Row
from minigpt.coursework.near_copy import near_copies
from minigpt.coursework.sandbox import (POOL, Sandbox, clean_call, processes_of, read_arrays, read_bytes,
                                        resolve_user, take_lock)

SOLUTION = inspect.getsource(solution)
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="running student code as its own user needs root "
                               "(CI runs the suite as root, so these run there)")


def leftovers():
    """Processes of the student uids that no grade holds now (a grade in progress elsewhere keeps its own)."""
    found = []
    for uid in POOL:
        lock = take_lock(uid, wait=False)
        if lock is not None:
            found += processes_of(uid)
            os.close(lock)
    return found


def attack_file(folder, module="", **bodies):
    """solution.py with `module` code after its imports and code at the top of some functions."""
    source = SOLUTION.replace("import numpy as np\n", "import numpy as np\n" + textwrap.dedent(module), 1)
    for name, code in bodies.items():
        head = re.search(rf"^def {name}\(.*\):\n", source, re.M).group(0)
        source = source.replace(head, head + textwrap.indent(textwrap.dedent(code), "    "), 1)
    path = Path(folder) / "student_layers.py"
    path.write_text(source, encoding="utf-8")
    return path


def package_digest():
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def grade_json(path, *flags):
    results = path.parent / "results.json"
    status = main(["grade", str(path), "--json", str(results), *flags])
    return status, json.loads(results.read_text(encoding="utf-8"))


def rows(out):
    return {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}


def visible_text(data):
    """Everything of results.json a student sees before the results are published."""
    return data["output"] + "".join(t["name"] + t["output"] for t in data["tests"] if "visibility" not in t)


@pytest.fixture
def loot():
    """A folder the student's user may write into: where the attacks leave what they got."""
    folder = tempfile.mkdtemp(prefix="minigpt-loot-")
    os.chmod(folder, 0o777)
    yield Path(folder)
    for p in Path(folder).iterdir():
        p.unlink()
    os.rmdir(folder)


ATTACKS = '''
import os, sys, threading, time
LOOT, PKG, EXTRA, RESULTS = {loot!r}, {pkg!r}, {extra!r}, {results!r}

def _note(name, outcome):
    try:
        with open(LOOT + "/" + name + "-" + str(os.getpid()), "w") as f:
            f.write(outcome)
    except OSError:
        pass

def _try(name, fn):
    try:
        _note(name, "got " + repr(fn())[:200])
    except BaseException as e:
        _note(name, "refused " + type(e).__name__)

def _replace():
    with open("judge.py", "w") as f:
        f.write("raise SystemExit")
    os.replace("judge.py", PKG + "/coursework/judge.py")

def _dirfd():
    fd = os.open("/proc/self", os.O_RDONLY)
    return os.read(os.open("root" + PKG + "/layers.py", os.O_RDONLY, dir_fd=fd), 100)

def _subinterpreter():
    import _xxsubinterpreters as interpreters
    interpreters.run_string(interpreters.create(), "open(%r).read()" % (PKG + "/layers.py"))

_try("read package", lambda: open(PKG + "/layers.py").read(100))
_try("dir fd", _dirfd)
_try("replace", _replace)
_try("parent memory", lambda: open("/proc/%d/mem" % os.getppid(), "rb").read(1))
_try("extra cases", lambda: open(EXTRA).read())
_try("kill parent", lambda: os.kill(os.getppid(), 9))
_try("sub-interpreter", _subinterpreter)
_try("thread", lambda: threading.Thread(target=time.sleep, args=(5,)).start())
_try("fork", os.fork)
_try("posixsubprocess", lambda: __import__("_posixsubprocess"))
_try("ctypes", lambda: __import__("ctypes").CDLL(None))
try:                                     # the guard refuses ctypes; past it, only the kernel says no
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
except BaseException:
    libc = None
if libc is not None:                     # past every Python-level check: only the kernel says no
    _try("libc open package", lambda: libc.open((PKG + "/layers.py").encode(), 0))
    _try("libc open parent memory", lambda: libc.open(("/proc/%d/mem" % os.getppid()).encode(), 0))
    _try("libc open extra cases", lambda: libc.open(EXTRA.encode(), 0))
    _try("libc rename into package", lambda: libc.rename(b"/dev/null", (PKG + "/coursework/judge.py").encode()))
    _try("libc kill parent", lambda: libc.kill(os.getppid(), 9))
    pid = libc.fork()
    if pid == 0:                         # a detached process that would rewrite results.json later
        libc.setsid()
        time.sleep(3)
        with open(RESULTS, "w") as f:
            f.write('{{"score": 100.0, "tests": []}}')
        os._exit(0)
    _note("libc fork", "got " + str(pid))
'''


@ROOT_ONLY
def test_attacks_on_files_memory_processes_and_hidden_cases_all_fail_as_root(tmp_path, loot, capsys):
    extra = tmp_path / "hidden.json"
    extra.write_text(json.dumps({"cases": [{"layer": "gelu", "name": "xyzzy secret", "seed": 424242}]}))
    results = tmp_path / "results.json"
    module = ATTACKS.format(loot=str(loot), pkg=str(PACKAGE_DIR), extra=str(extra), results=str(results))
    path = attack_file(tmp_path, module, gelu_backward="return dout\n",             # a wrong backward: 89.7 points
                       gelu_forward="print('gelu_forward saw', x.shape)\n")
    before, mode = package_digest(), extra.stat().st_mode
    status, data = grade_json(path, "--extra-cases", str(extra))
    out = capsys.readouterr()
    assert status == 1 and "Traceback" not in out.out + out.err
    assert data["score"] == pytest.approx(100 - 8 - 16 / 7, abs=1e-3), out.out
    outcomes = {}
    for p in loot.iterdir():
        outcomes.setdefault(p.name.rsplit("-", 1)[0], set()).add(p.read_text())
    expected = {"read package", "dir fd", "replace", "parent memory", "extra cases", "kill parent",
                "sub-interpreter", "thread", "fork", "posixsubprocess", "ctypes"}
    # (no job loads minigpt, so the guard refuses ctypes in every one: the libc routes below, which
    # only the kernel would refuse, are not reached; test_grading_as_root_hides_the_package covers that)
    assert set(outcomes) == expected, outcomes
    for name, seen in outcomes.items():
        assert all(o.startswith("refused") or o == "got -1" for o in seen), (name, seen)
    assert package_digest() == before and extra.stat().st_mode == mode
    time.sleep(3.5)                                           # the detached process would have written by now
    assert json.loads(results.read_text()) == data
    assert leftovers() == []
    assert "xyzzy" not in visible_text(data) and "424242" not in visible_text(data)
    hidden = [t for t in data["tests"] if "hidden" in t["name"]]
    assert hidden and all(t["visibility"] == "after_published" for t in hidden)
    assert data["stdout_visibility"] == "hidden"
    shown = [t for t in data["tests"] if t["name"].startswith("gelu_forward")]
    assert all("your code printed here: 'gelu_forward saw" in t["output"] for t in shown)
    assert "gelu_forward saw" not in data["output"]


@ROOT_ONLY
def test_a_blocked_alarm_a_huge_allocation_and_forged_files_cost_their_own_tests_only(tmp_path, capsys):
    path = attack_file(
        tmp_path,
        gelu_backward="""
            import signal
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            while True:
                pass
        """,
        layernorm_forward="""
            big = np.ones(200_000_000)               # 1.6 GB
        """,
        cross_entropy_backward="""
            import os, zipfile
            for name in [n for n in os.listdir(".") if n.endswith(".npz")]:   # cases the grader reads later
                header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }"
                header += b" " * (117 - len(header)) + b"\\n"
                with zipfile.ZipFile(name, "w") as z:
                    z.writestr("out.npy", b"\\x93NUMPY\\x01\\x00v\\x00" + header)
            with open("results.jsonl", "a") as f:
                f.write('{"id": "0", "forward": {"status": "ok"}}\\n')
                f.write('{"id": "1", "forward": {"status": "ok", "out": {"kind": "array", "key": 3}}, '
                        '"backward": {"status": "ok", "grads": 5}}\\n')
                f.write('{"id": "model", "status": "ok", "loss": "low", "params": []}\\n')
                f.write('[' * 100000 + '\\n')
                f.write('{"id": "printed", "count": "many", "head": 7}\\n')
        """)
    before = package_digest()
    t0 = time.perf_counter()
    status, data = grade_json(path, "--timeout", "0.5")
    seconds = time.perf_counter() - t0
    out = capsys.readouterr()
    assert status == 1 and "Traceback" not in out.out + out.err
    table = rows(out.out)
    assert "did not finish within 0.5 s" in table["gelu_backward"], table["gelu_backward"]
    assert "MemoryError" in table["layernorm_forward"], table["layernorm_forward"]
    assert float(table["cross_entropy_forward"].split()[1]) < 4.0 and "unreadable" in table["cross_entropy_forward"]
    for name in ("embedding_forward", "linear_backward", "attention_backward", "dropout_backward"):
        assert table[name].split()[1] == table[name].split()[2], table[name]
    # 4 gelu cases, each stopped by the wall clock after 0.5 + STEP_SLACK s, not by the job's limit
    assert seconds < 4 * (0.5 + sandbox.STEP_SLACK) * 2 + 30, seconds
    assert {t["name"].split(":")[0] for t in data["tests"]} >= {"gelu_backward", "model"}
    assert package_digest() == before and leftovers() == []


@ROOT_ONLY
def test_a_detached_process_of_the_students_user_is_killed_after_its_job():
    box = Sandbox.for_this_process()
    pid = os.fork()
    if pid == 0:                                      # became the student's user, then a session of its own
        try:
            box.close()                               # (the grade's lock is never the student's)
            os.setgroups([])
            os.setgid(box.gid)
            os.setuid(box.uid)
            if os.fork() == 0:
                os.setsid()
                time.sleep(30)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert processes_of(box.uid)
    box.close()
    with pytest.raises(sandbox.SandboxError, match="already runs processes"):
        Sandbox.for_this_process(str(box.uid))        # a user that is not free is refused
    other = Sandbox.for_this_process()                # and the default takes another
    assert other.uid != box.uid
    other.close()
    box.kill_all()
    assert processes_of(box.uid) == []


@ROOT_ONLY
def test_two_grades_at_once_never_share_a_student_uid():
    """Each grade holds its uid's lock for all its time: a second grade by default takes another
    uid, and one given the same --user waits until the first has finished."""
    import threading
    first, second = Sandbox.for_this_process(), Sandbox.for_this_process()
    try:
        assert first.uid != second.uid
        got = []
        waiter = threading.Thread(target=lambda: got.append(Sandbox.for_this_process(str(first.uid))))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and not got          # waits for the first grade
        first.close()
        waiter.join(5)
        assert got and got[0].uid == first.uid
        got[0].close()
    finally:
        first.close()
        second.close()


@ROOT_ONLY
def test_grading_as_root_hides_the_package_and_restores_its_permissions(tmp_path):
    """Two grades at once: the package stays hidden until the last of them ends, whichever it is."""
    mode = PACKAGE_DIR.stat().st_mode
    box, other = Sandbox.for_this_process(), Sandbox.for_this_process()
    first, second = box.hidden([PACKAGE_DIR]), other.hidden([PACKAGE_DIR])
    try:
        first.__enter__()
        assert PACKAGE_DIR.stat().st_mode & 0o077 == 0
        second.__enter__()
        first.__exit__(None, None, None)                     # the first grade ends, the second runs on
        assert PACKAGE_DIR.stat().st_mode & 0o077 == 0
        second.__exit__(None, None, None)
        assert PACKAGE_DIR.stat().st_mode == mode
    finally:
        os.chmod(PACKAGE_DIR, mode)
        box.close()
        other.close()


def test_forged_npz_files_symlinks_and_fifos_are_refused_before_anything_is_allocated(tmp_path):
    np.savez(tmp_path / "good.npz", out=np.arange(6.0).reshape(2, 3))
    assert read_arrays(tmp_path / "good.npz")["out"].shape == (2, 3)
    import zipfile
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }"
    header += b" " * (117 - len(header)) + b"\n"
    with zipfile.ZipFile(tmp_path / "8tb.npz", "w") as z:       # declares 8 TB, holds nothing
        z.writestr("out.npy", b"\x93NUMPY\x01\x00v\x00" + header)
    assert read_arrays(tmp_path / "8tb.npz") == {}
    np.savez(tmp_path / "objects.npz", out=np.array([{}], dtype=object))
    assert read_arrays(tmp_path / "objects.npz") == {}
    (tmp_path / "link.npz").symlink_to(tmp_path / "good.npz")
    assert read_arrays(tmp_path / "link.npz") == {}
    os.mkfifo(tmp_path / "fifo")                                 # would hang a plain open()
    assert read_bytes(tmp_path / "fifo") is None


def test_forged_records_are_cut_down_to_what_the_runner_writes():
    arrays = {"out": np.zeros(3)}
    assert clean_call({"status": "ok"}, arrays, "forward") == {"status": "unreadable"}
    assert clean_call({"status": "ok", "out": {"kind": "array", "key": "nope"}}, arrays, "forward")["out"][
        "kind"] == "other"
    assert clean_call({"status": "ok", "grads": 5}, arrays, "backward") == {"status": "unreadable"}
    assert clean_call({"status": "pass!", "message": 1}, arrays, "forward") == {"status": "unreadable"}
    assert clean_call({"status": "error", "message": "x" * 10_000}, arrays, "forward")["message"] == "x" * 300


def test_a_reply_on_the_model_channel_is_checked_before_anything_is_allocated():
    head = lambda specs: json.dumps({"status": "ok", "arrays": specs}).encode()   # noqa: E731
    assert sandbox.decode_head(head([["<f8", [2, 3]]]))[2] == 48
    assert sandbox.decode_head(head([["<f8", [1 << 30, 1 << 30]]])) is None       # 8 EB declared
    assert sandbox.decode_head(head([["|O", [1]]])) is None                       # objects
    assert sandbox.decode_head(head([["<f8", [2.5]]])) is None
    assert sandbox.decode_head(head([["<f8", [1]]] * 17)) is None
    assert sandbox.decode_head(b"[" * 100_000) is None and sandbox.decode_head(b"7") is None
    r, w = os.pipe()
    try:                                 # a header longer than MAX_HEAD, then a child that says nothing
        os.write(w, (1 << 20).to_bytes(4, "big"))
        channel = sandbox.Channel(None, r, w, time.monotonic() + 5, 0.2)
        with pytest.raises(sandbox.ChannelClosed, match="unreadable"):
            channel.call(None)
        t0 = time.monotonic()
        with pytest.raises(sandbox.ChannelClosed, match="timeout"):
            channel.call(None)
        assert time.monotonic() - t0 < 2
    finally:
        os.close(r)
        os.close(w)


def test_the_grader_writes_results_json_even_when_it_fails_itself(tmp_path, capsys, monkeypatch):
    import minigpt.coursework.grade as grade

    def broken(*args, **kwargs):
        raise RuntimeError("something the grader did not foresee")
    monkeypatch.setattr(grade, "grade_file", broken)
    path = attack_file(tmp_path)
    status, data = grade_json(path)
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "the grader failed: RuntimeError" in err
    assert data["score"] == 0 and "the grader failed" in data["output"]


def test_bad_user_and_memory_flags_end_in_one_line(tmp_path, capsys):
    path = attack_file(tmp_path)
    assert main(["grade", str(path), "--memory", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--memory must be between 64 and" in err
    with pytest.raises(SystemExit) as stop:
        main(["grade", str(path), "--visibility", "soon"])
    assert stop.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(sandbox.SandboxError, match="must not run as root"):
        resolve_user("0")
    with pytest.raises(sandbox.SandboxError, match="no such user"):
        resolve_user("no-such-user-of-minigpt")
    assert resolve_user("1234:99") == (1234, 99)


def test_a_near_copy_of_minigpts_layer_is_noted_for_the_instructor_alone():
    from minigpt import layers
    copied = inspect.getsource(layers.attention_backward)
    for old, new in (("dy", "grad_out"), ("cache", "saved"), ("    ", "  ")):     # renamed, respaced
        copied = copied.replace(old, new)
    copied = "import numpy as np\nimport math\n" + re.sub(r'"""[^"]*"""', "", copied, count=1)
    notes = near_copies(copied)
    assert len(notes) == 1 and notes[0].startswith("attention_backward is ") and "near-copy" in notes[0]
    assert near_copies(SOLUTION) == []                  # an independent solution is not one
    report = Report(tests=[Row("gelu_forward: 3-D input", "gelu_forward", 4.0, 4.0, "pass")], notes=notes)
    data = report.results_json()
    assert data["score"] == 4.0 and notes[0] in data["tests"][-1]["output"]
    assert data["tests"][-1]["visibility"] == "hidden" and data["tests"][-1]["max_score"] == 0.0
    assert notes[0] not in visible_text(data)


def test_without_root_the_child_runs_as_the_graders_user_under_the_same_limits(tmp_path):
    from minigpt.coursework.grade import grade_file
    path = attack_file(tmp_path, linear_forward="""
        import resource
        assert resource.getrlimit(resource.RLIMIT_NPROC) == (1, 1), "no limit on processes"
        assert resource.getrlimit(resource.RLIMIT_AS)[0] == 768 << 20, "no limit on memory"
    """)
    report = grade_file(path, sandbox=Sandbox(), workers=2)       # what a student's own laptop runs
    assert report.score == pytest.approx(100.0), report.table()


def test_the_table_and_results_json_keep_hidden_names_and_printing_where_the_instructor_allows():
    tests = [Row("gelu_forward: 3-D input", "gelu_forward", 2.0, 2.0, "pass", printed="hello"),
             Row("gelu_forward: hidden: xyzzy", "gelu_forward", 0.0, 2.0, "fail", "out (2, 5): wrong", hidden=True,
                 printed="from a hidden case")]
    report = Report(tests=tests)
    assert report.functions()["gelu_forward"][3] == "1 of 2 cases pass (1 hidden); a hidden case: out (2, 5): wrong"
    assert "xyzzy" not in report.table()
    data = report.results_json()
    assert data["tests"][1]["visibility"] == "after_published" and "visibility" not in data["tests"][0]
    assert "your code printed here: 'hello'" in data["tests"][0]["output"]
    assert "from a hidden case" in data["tests"][1]["output"] and "from a hidden case" not in visible_text(data)
    report.visibility, report.printed_in_tests, report.stdout_visibility = "after_due_date", False, "visible"
    data = report.results_json()
    assert data["tests"][1]["visibility"] == "after_due_date" and data["stdout_visibility"] == "visible"
    assert "hello" not in json.dumps(data)


FORGED_MODEL = """
    if x.shape[-1] == 48:                    # only in the whole model (its MLP is 4 * 12 wide)
        import json, os
        forged = {"id": "model", "status": "ok", "loss": [1.0, 1.0], "params": {"wte.weight": [0.0, 0.0]}}
        for name in ("results.jsonl", "out_model.npz", "progress.txt"):
            with open(name, "w") as f:
                f.write(json.dumps(forged) + "\\n")
        for fd in range(3, 20):              # and a forged 'everything matches' down any open pipe
            try:
                os.write(fd, b"\\x00\\x00\\x00\\x10" + json.dumps({"status": "ok", "values": [0]}).encode())
            except OSError:
                pass
        os._exit(0)
"""


def test_a_forged_whole_model_record_earns_nothing(tmp_path):
    """The student's process writes a perfect model record (and junk down its pipes) and ends:
    the grader computes the model's loss and gradients itself, so the gelu pair is left out."""
    path = attack_file(tmp_path, gelu_forward=FORGED_MODEL)
    report = grade_file(path)
    points, _, _, why = report.functions()["model"]
    assert points == pytest.approx(16 * 6 / 7), report.table()
    assert "left out gelu: gelu_forward did not finish" in why, why
    assert report.score == pytest.approx(100 - 16 / 7)
    assert leftovers() == []


def test_a_model_reply_of_the_wrong_shape_leaves_its_pair_out_with_the_shapes_named(tmp_path):
    path = attack_file(tmp_path, gelu_forward="""
        if x.shape[-1] == 48:                # only in the whole model: a float32 output, one row short
            return np.zeros((x.shape[0] - 1,) + x.shape[1:], np.float32), None
    """)
    report = grade_file(path)
    points, _, _, why = report.functions()["model"]
    assert points == pytest.approx(16 * 6 / 7), report.table()
    assert "left out gelu: gelu_forward gave its output as (1, 7, 48), where the GPT needs (2, 7, 48)" in why, why


def test_a_model_call_that_blocks_the_alarm_is_stopped_by_the_wall_clock_per_call(tmp_path):
    path = attack_file(tmp_path, gelu_forward="""
        if x.shape[-1] == 48:                # only in the whole model
            import signal, time
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(1000)
    """)
    t0 = time.perf_counter()
    report = grade_file(path, timeout=1.0)
    seconds = time.perf_counter() - t0
    points, _, _, why = report.functions()["model"]
    assert points == pytest.approx(16 * 6 / 7) and "left out gelu: gelu_forward did not finish within 1 s" in why, why
    assert seconds < 45, seconds                 # the call's 1 + STEP_SLACK s, not the model's 60 + 15 s


FORGED_DIFFERENCES = '''
import sys
import numpy as np

def _frame(name):
    f = sys._getframe(1)
    while f is not None and f.f_code.co_name != name:
        f = f.f_back
    return f

def _fwd(*args):
    return None, args

def _bwd(dout, cache):          # plants "finite differences" equal to what it returns, in every frame it finds
    grads, f = [], _frame("run_layer_case")
    L = f.f_locals if f is not None else {"args": [a for a in cache if isinstance(a, np.ndarray)], "arrays": {}}
    args, arrays = L["args"], L["arrays"]
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            g = np.ones_like(a)
            idx = np.arange(min(24, a.size), dtype=np.int64)
            arrays["fd_index_%d" % i] = idx
            arrays["fd_value_%d" % i] = g.reshape(-1)[idx].astype(np.float64)
            grads.append(g)
    grads = [g for g in grads][:len(f.f_locals["case"]["grad_args"]) if f is not None else 1]
    return tuple(grads) if len(grads) > 1 else grads[0]

for _l in ("embedding", "linear", "layernorm", "gelu", "dropout", "attention", "cross_entropy"):
    globals()[_l + "_forward"] = _fwd
    globals()[_l + "_backward"] = _bwd
'''


def test_finite_differences_the_child_plants_earn_nothing(tmp_path):
    """A backward that reaches the runner's frames and writes fd_index/fd_value equal to what it
    returns (its forward returns nothing): the grader takes its differences itself, so 0."""
    path = tmp_path / "student_layers.py"
    path.write_text(FORGED_DIFFERENCES, encoding="utf-8")
    report = grade_file(path, timeout=2.0)
    assert report.score == 0.0, report.table()
    assert leftovers() == []


def test_writing_in_place_is_found_by_the_grader_even_with_numpys_equality_replaced(tmp_path):
    """The child's np.array_equal always says True; the backward zeroes the dout it was given and
    the forward the input (each computing on a copy): the grader compares what came back."""
    path = attack_file(tmp_path, "np.array_equal = lambda *a, **k: True\n",
                       gelu_backward="_d = dout.copy(); dout[...] = 0.0; dout = _d\n",
                       layernorm_forward="_x = x.copy(); x[...] = 0.0; x = _x\n")
    report = grade_file(path, timeout=2.0)
    rows = report.functions()
    assert rows["gelu_backward"][0] == 0.0 and "modifies dout in place" in rows["gelu_backward"][3], report.table()
    assert rows["layernorm_forward"][0] == 0.0 and "modifies its input x in place" in rows["layernorm_forward"][3]
    assert rows["gelu_forward"][0] == rows["gelu_forward"][1]        # the others keep their points


OTHER_COPY = '''
import importlib.util, marshal, sys, types
COPY = {copy!r}

def _load():                             # another copy of minigpt, under another package name
    pkg = types.ModuleType("refpkg")
    pkg.__path__ = [COPY]
    sys.modules["refpkg"] = pkg
    spec = importlib.util.spec_from_file_location("refpkg.layers", COPY + "/layers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["refpkg.layers"] = module
    spec.loader.exec_module(module)
    return module

def _pyc():                              # or its compiled code, read with marshal
    with open(COPY + "/__pycache__/layers." + sys.implementation.cache_tag + ".pyc", "rb") as f:
        namespace = {{}}
        exec(marshal.loads(f.read()[16:]), namespace)
        return namespace

try:
    _L = _load()
except BaseException:
    _L = None
try:
    _P = _pyc()
except BaseException:
    _P = None
'''


@pytest.fixture
def other_copy():
    """Another readable copy of minigpt's package, with its .pyc, as the student's user could find one."""
    import py_compile
    import shutil
    import sys
    folder = Path(tempfile.mkdtemp(prefix="minigpt-copy-"))
    copy = folder / "site" / "minigpt"
    copy.mkdir(parents=True)
    (copy / "__init__.py").write_text("", encoding="utf-8")
    (copy / "model.py").write_text("", encoding="utf-8")
    (copy / "layers.py").write_text(SOLUTION, encoding="utf-8")   # stands in for minigpt's (which needs ctypes)
    py_compile.compile(str(copy / "layers.py"), cfile=str(copy / "__pycache__" /
                                                          f"layers.{sys.implementation.cache_tag}.pyc"))
    for p in [folder, *folder.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    yield copy
    shutil.rmtree(folder)


@ROOT_ONLY
def test_another_copy_of_minigpt_cannot_be_loaded_nor_its_pyc_read(tmp_path, other_copy):
    """A file that loads another readable copy of minigpt (another package name) for gelu and runs
    its .pyc for linear earns nothing there; it sits in a folder whose name has "minigpt" in it,
    and still loads."""
    folder = tmp_path / "minigpt-clone"
    folder.mkdir()
    path = attack_file(folder, OTHER_COPY.format(copy=str(other_copy)),
                       gelu_forward="return _L.gelu_forward(x)\n", gelu_backward="return _L.gelu_backward(dout, cache)\n",
                       linear_forward="return _P['linear_forward'](x, w, b)\n",
                       linear_backward="return _P['linear_backward'](dy, cache)\n")
    report = grade_file(path, timeout=2.0)
    rows = report.functions()
    for name in ("gelu_forward", "gelu_backward", "linear_forward", "linear_backward"):
        assert rows[name][0] == 0.0, report.table()
    assert rows["layernorm_forward"][0] == rows["layernorm_forward"][1], report.table()


@ROOT_ONLY
def test_a_hang_that_writes_junk_records_cannot_stretch_its_job_past_the_jobs_bound(tmp_path):
    """gelu_forward blocks SIGALRM and appends a junk line to results.jsonl every 2.1 s: junk
    resets no clock, and the job's restarts share one deadline, --timeout x (cases + 1) + 10 s."""
    path = attack_file(tmp_path, gelu_forward="""
        import signal, time
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        while True:
            with open("results.jsonl", "a") as f:
                f.write("junk\\n")
            time.sleep(2.1)                  # just under the step clock (0.3 + 2 s)
    """)
    t0 = time.perf_counter()
    report = grade_file(path, timeout=0.3)
    seconds = time.perf_counter() - t0
    assert "did not finish within 0.3 s" in report.functions()["gelu_forward"][3], report.table()
    # the gelu job's bound (4 cases), and a few seconds for the other six layers and the model
    assert seconds < 0.3 * (4 + 1) + 10 + 12, seconds
    assert leftovers() == []


def test_what_a_hidden_case_prints_cannot_be_counted_in_the_always_visible_output(tmp_path):
    """During a hidden case the file prints a number of characters it chose from the case's inputs:
    results.json's output (always visible) says only that it printed; the time is rounded to 10 s."""
    extra = tmp_path / "hidden.json"
    extra.write_text(json.dumps({"cases": [{"layer": "gelu", "name": "xyzzy", "seed": 4242, "shape": [3, 7]}]}))
    path = attack_file(tmp_path, gelu_forward="""
        if x.shape == (3, 7):                    # the hidden case: 424,242 characters, say
            print("x" * 424242, end="")
    """)
    status, data = grade_json(path, "--extra-cases", str(extra))
    assert data["score"] == pytest.approx(100.0)
    assert "printed" in data["output"] and not re.search(r"\d{3}", data["output"].split("points", 1)[1])
    assert "424" not in visible_text(data)
    assert data["execution_time"] % 10 == 0


@ROOT_ONLY
def test_files_the_students_user_leaves_in_shared_temporary_folders_are_removed(tmp_path):
    """gelu_forward leaves a file in /tmp, /var/tmp and /dev/shm (memory RLIMIT_AS does not count)
    and a folder: after the grade none is left."""
    tag = f"left-behind-{os.getpid()}"
    path = attack_file(tmp_path, gelu_forward=f"""
        import os
        for folder in ("/tmp", "/var/tmp", "/dev/shm"):
            try:
                with open(folder + "/{tag}", "wb") as f:
                    f.write(b"x" * 100000)
            except OSError:
                pass
        os.makedirs("/tmp/{tag}-dir/deeper", exist_ok=True)
        open("/tmp/{tag}-dir/deeper/f", "w").close()
    """)
    report = grade_file(path, timeout=2.0)
    assert report.score == pytest.approx(100.0), report.table()
    left = [p for p in (f"/tmp/{tag}", f"/var/tmp/{tag}", f"/dev/shm/{tag}", f"/tmp/{tag}-dir") if os.path.lexists(p)]
    assert left == []


@ROOT_ONLY
def test_removing_a_users_files_never_follows_a_link(tmp_path):
    """A link of the student's user's to a folder of root's is removed, not what it points to."""
    uid = POOL[-1]
    shared = tmp_path / "shared"
    shared.mkdir()
    kept = tmp_path / "roots"
    kept.mkdir()
    (kept / "file").write_text("keep me")
    (shared / "link").symlink_to(kept)
    (shared / "own").write_text("x")
    (shared / "other").write_text("x")
    for p in (shared / "link", shared / "own"):
        os.lchown(p, uid, uid)
    sandbox.remove_files_of(uid, [str(shared)])
    assert sorted(p.name for p in shared.iterdir()) == ["other"]
    assert (kept / "file").read_text() == "keep me"
