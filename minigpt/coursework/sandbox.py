"""The grader's security boundary: the student's process, its user and limits, the one channel back.

    box = Sandbox.for_this_process(memory_mb=768)     # a free uid of POOL, locked; SandboxError: one line
    with box.hidden([package_dir, "hidden_cases.json"]):          # as root: out of the student's reach
        job = box.job(tmp, "gelu", [runner_py, guard_py])         # an inbox and an outbox
        killed, code = box.run(job, limit=70, step=12)            # SIGKILL from here, by the wall clock
        records, import_error = read_results(job, fd_sizes)       # checked before it is trusted

Everything a student's code can reach passes through this file; verdicts, cases and the
kit never touch it. What holds:

- as root (Gradescope, a course's server): the child runs as its own user (`--user`, by
  default the first uid and gid of 65532 down to 65501, which no standard image gives an
  account, that no other grade holds: a grade holds its uid's flock for all its time), with no
  supplementary groups, umask 077 and a session of its own. The grader's package and the
  hidden-cases files lose their group and other permissions for the time of the grade,
  so the student's user can neither read nor replace them by any route (directory
  descriptors and symlinks included); the grader's memory is another user's
  (/proc/PID/mem is refused), and so are its output folder and results.json, written
  after every process of the student's user has been killed (kill(-1, SIGKILL) as that
  user, after each job).
- always: limits set in the child before it executes Python (address space `memory_mb`,
  CPU time, file size `FILE_MB`, no new processes or threads: RLIMIT_NPROC is 1); the wall
  clock is kept here and ends the child's process group with SIGKILL, per case (`step`)
  and per job (`limit`), so no signal mask stretches a grade; the child's files are read
  without following symlinks, refusing anything but a regular file, and arrays only after
  their zip sizes and .npy headers (shape times itemsize) are under MAX_BYTES. The
  whole-model job (serve) has no record at all: minigpt's GPT runs here, and the child
  only answers calls over two pipes (a Channel), each reply's declared dtypes and shapes
  checked before a byte of it is read, and waited for by the wall clock.
- without root: the student's code runs as the grader's own user, so it can read and
  write what the grader can (and signal it). docs/coursework.md says what that leaves.
"""
import fcntl
import io
import json
import math
import os
import pwd
import grp
import resource
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POOL = range(65532, 65500, -1)  # without --user: the first of these uids (and gids) no other grade holds and
#                                 no process uses; no standard image gives them an account (nobody is 65534)
MEMORY_MB = 768                 # Gradescope's default container memory
FILE_MB = 64                    # the largest file the child may write
MAX_BYTES = 64 << 20            # the most the grader reads back from one child file
NOFILE = 128                    # descriptors the child may hold open at once
STEP_SLACK = 2.0                # seconds a case may run past --timeout before its process is killed
STARTUP_SLACK = 5.0             # and the seconds Python and NumPy may take to start, before the file's import
CHILD_ENV = ("PATH", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "SYSTEMROOT")


class SandboxError(Exception):
    """The grader cannot set up the student's process as asked: one line, exit status 2."""


@dataclass
class Job:
    inbox: Path                 # the grader's: job.json, inputs, runner.py (the child reads)
    outbox: Path                # the child's: results.jsonl, out_<id>.npz, progress.txt


@dataclass
class Sandbox:
    uid: int = None             # None: not root, the child runs as the grader's own user
    gid: int = None
    memory_mb: int = MEMORY_MB
    lock: int = None            # as root: the descriptor of the uid's lock, held for the whole grade

    @classmethod
    def for_this_process(cls, user=None, memory_mb=MEMORY_MB):
        """user None: the first uid of POOL that no other grade holds and no process uses; a
        given user: wait for its lock (another grade of it), then refuse it if it runs processes."""
        if not 64 <= memory_mb <= 1 << 20:
            raise SandboxError(f"--memory must be between 64 and 1048576 MB, got {memory_mb}")
        if os.geteuid() != 0:
            return cls(None, None, memory_mb)
        if user is None:
            for uid in POOL:
                lock = take_lock(uid, wait=False)
                if lock is not None and not processes_of(uid):
                    return cls(uid, uid, memory_mb, lock)
                if lock is not None:
                    os.close(lock)
            raise SandboxError(f"all {len(POOL)} student uids ({POOL[-1]}-{POOL[0]}) are in use by other grades "
                               "or processes; give --user one nothing else uses")
        uid, gid = resolve_user(user)
        lock = take_lock(uid, wait=True)
        busy = processes_of(uid)
        if busy:
            os.close(lock)
            raise SandboxError(f"user {uid} already runs processes (pid {', '.join(map(str, busy[:5]))}); the "
                               "grader kills every process of the student's user, so give --user one nothing "
                               "else uses")
        return cls(uid, gid, memory_mb, lock)

    def close(self):
        """Let another grade have this uid (the lock goes with the process too)."""
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None

    @property
    def isolated(self):
        return self.uid is not None

    @contextmanager
    def hidden(self, paths):
        """As root: the paths lose their group and other permissions while the grade runs. Grades
        at once share them: each holds a shared flock on one lock file, which also keeps the
        modes as they were; the last grade to end restores them all (a grade killed before it
        could is made good by the next one to end)."""
        if not self.isolated:
            yield
            return
        grading, modes = open_lock("hidden"), open_lock("modes")   # held shared by every grade; a mutex
        try:
            fcntl.flock(modes, fcntl.LOCK_EX)
            try:
                fcntl.flock(grading, fcntl.LOCK_SH)
                saved = _saved_modes(modes)
                for path in map(str, paths):
                    st = os.stat(path)
                    if st.st_mode & 0o077 and path not in saved:
                        saved[path] = stat.S_IMODE(st.st_mode)
                        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
                _keep_modes(modes, saved)
            finally:
                fcntl.flock(modes, fcntl.LOCK_UN)
            yield
        finally:
            fcntl.flock(modes, fcntl.LOCK_EX)
            try:
                fcntl.flock(grading, fcntl.LOCK_EX | fcntl.LOCK_NB)   # the last grade holding them?
            except BlockingIOError:
                pass
            else:
                for path, mode in _saved_modes(modes).items():
                    try:
                        os.chmod(path, mode)
                    except OSError:
                        pass
                _keep_modes(modes, {})
            os.close(grading)
            os.close(modes)

    def job(self, tmp, name, files):
        """An inbox (the grader's, readable) and an outbox (the child's) with names no one can
        guess, in `tmp` (which others may cross but not list); `files` are copied to the inbox."""
        os.chmod(tmp, 0o711)
        tag = secrets.token_hex(8)
        job = Job(Path(tmp) / f"{name}-in-{tag}", Path(tmp) / f"{name}-out-{tag}")
        job.inbox.mkdir(mode=0o755)
        job.outbox.mkdir(mode=0o700)
        for f in files:
            shutil.copyfile(f, job.inbox / Path(f).name)
            os.chmod(job.inbox / Path(f).name, 0o644)
        self.give(job.outbox)
        return job

    def give(self, path):
        """Make path (and everything under it) the student's user's."""
        if self.isolated:
            for p in [path, *Path(path).rglob("*")]:
                os.lchown(p, self.uid, self.gid)

    def spec(self, limit):
        """What the child is to become (job.json's "sandbox"): its user and its limits."""
        return dict(uid=self.uid, gid=self.gid, memory=self.memory_mb << 20, cpu=int(math.ceil(limit)) + 1,
                    fsize=FILE_MB << 20)

    def run(self, job, limit, step=None, steps=0, ids=None):
        """Run the runner in the child (it calls enter() before it opens its outbox); SIGKILL after
        `limit` seconds, or after `step` seconds in which results.jsonl gained no record (at most
        `steps` times reset; ids: the case ids a record may have, each counted once, besides the
        runner's "loaded" line, whose first step covers the import and STARTUP_SLACK more;
        None: any growth counts); then every process of the student's user. Returns (killed, code)."""
        with open(job.inbox / "output.txt", "wb") as log:
            child = self._start(job, log)
            killed = self._watch(child, job.outbox / "results.jsonl", limit, step, steps, ids)
        self.kill_all()
        return killed, child.returncode

    def _start(self, job, log, fds=()):
        argv = [sys.executable, "-I", str(job.inbox / "runner.py"), str(job.inbox), str(job.outbox), *map(str, fds)]
        env = {k: os.environ[k] for k in CHILD_ENV if k in os.environ}
        env.update(HOME=str(job.outbox), TMPDIR=str(job.outbox), OPENBLAS_NUM_THREADS="1",
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        return subprocess.Popen(argv, cwd=job.outbox, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, start_new_session=True, pass_fds=fds)

    @contextmanager
    def serve(self, job, limit, step):
        """The whole-model job: the child calls the student's functions when asked, over two
        pipes (a Channel); the grader's GPT, its reference and every comparison stay here.
        At the end, or after `limit` seconds in all, the child and every process of the
        student's user are killed."""
        request_r, request_w = os.pipe()            # the grader writes, the child reads
        reply_r, reply_w = os.pipe()                # the child writes, the grader reads
        os.set_blocking(request_w, False)
        child = None
        try:
            with open(job.inbox / "output.txt", "wb") as log:
                child = self._start(job, log, (request_r, reply_w))
            os.close(request_r)
            os.close(reply_w)
            request_r = reply_w = None
            yield Channel(child, reply_r, request_w, time.monotonic() + limit, step)
        finally:
            for fd in (request_r, request_w, reply_r, reply_w):
                if fd is not None:
                    os.close(fd)
            if child is not None:
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.wait()
            self.kill_all()

    @staticmethod
    def _watch(child, results, limit, step, steps, ids=None):
        start = last = time.monotonic()
        size, seen, deadline = 0, 0, start + limit
        killed = False
        try:
            while child.poll() is None:
                now = time.monotonic()
                if step:
                    grown = _size(results)
                    if grown > size:            # junk lines, or a record seen before, reset nothing
                        size = grown
                        count = grown if ids is None else _records(results, ids)
                        if count > seen and steps > 0:
                            seen, last, steps = count, now, steps - 1
                    # before the first record ("loaded"): starting Python and importing the file
                    if now - last > (step if seen else step + STARTUP_SLACK):
                        killed = True
                        break
                if now > deadline:
                    killed = True
                    break
                time.sleep(0.02)
        finally:
            if child.poll() is None:
                try:
                    os.killpg(child.pid, signal.SIGKILL)    # the student's code and anything it started
                except ProcessLookupError:
                    pass
                child.wait()
        return killed

    def kill_all(self):
        """As root: SIGKILL every process of the student's user (a detached one too), from a
        fork of this process that becomes that user (kill(-1) reaches exactly those); then
        remove what that user left in the shared temporary folders (remove_files_of)."""
        if not self.isolated:
            return
        for _ in range(50):
            pid = os.fork()
            if pid == 0:                                # noqa: no Python code of the student's runs here
                try:
                    os.setgroups([])
                    os.setgid(self.gid)
                    os.setuid(self.uid)
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            if not processes_of(self.uid):
                break
            time.sleep(0.02)
        remove_files_of(self.uid)


# in the child, before the student's file: become the student's user, under the limits

PRELOAD = ("math", "cmath", "itertools", "functools", "collections", "operator", "random", "statistics",
           "typing", "dataclasses", "copy", "numbers", "fractions", "decimal", "string", "re", "warnings",
           "contextlib", "glob", "fnmatch", "pathlib", "heapq", "bisect", "array", "struct", "textwrap",
           "time", "datetime", "enum", "io", "json", "zipfile", "encodings.cp437", "encodings.latin_1",
           "encodings.ascii", "encodings.utf_8", "numpy", "numpy.linalg", "numpy.random", "numpy.fft",
           "numpy.lib.stride_tricks")


def enter(spec):
    """Called by the runner with job.json's "sandbox", before it opens anything the student's
    code could have touched. As root: the modules a student may use are imported first (the
    interpreter's own files may be unreadable to the student's user), then the process drops
    to that user for good (real, effective and saved ids; no supplementary groups). Always: the
    limits, hard and soft, which the student's code cannot raise again."""
    import importlib
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    if spec.get("uid") is not None:
        os.setgroups([])
        os.setresgid(spec["gid"], spec["gid"], spec["gid"])
        os.setresuid(spec["uid"], spec["uid"], spec["uid"])
        if os.getresuid() != (spec["uid"],) * 3 or os.getgroups():
            os._exit(70)
        os.umask(0o077)
    resource.setrlimit(resource.RLIMIT_AS, (spec["memory"], spec["memory"]))
    resource.setrlimit(resource.RLIMIT_CPU, (spec["cpu"], spec["cpu"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["fsize"], spec["fsize"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))          # no new process, and no thread either
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))    # a few files open at once


def lock_path(uid):
    """Where the lock of a student uid lives: /run (root's alone) where there is one."""
    folder = "/run" if os.path.isdir("/run") and os.access("/run", os.W_OK) else tempfile.gettempdir()
    return os.path.join(folder, f"minigpt-grade-{uid}.lock")


def open_lock(name):
    """The lock file's descriptor, opened without following a link and refused unless it is a
    regular file of root's that no one else may write."""
    path = lock_path(name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise SandboxError(f"cannot open the lock {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        os.close(fd)
        raise SandboxError(f"the lock {path} is not a regular file of root's: remove it")
    return fd


def _saved_modes(fd):
    """{path: mode} kept in the hidden lock file (root's alone), {} when it holds nothing readable."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        saved = json.loads(os.read(fd, 1 << 20) or b"{}")
    except ValueError:
        return {}
    return {k: v for k, v in saved.items() if type(v) is int} if isinstance(saved, dict) else {}


def _keep_modes(fd, saved):
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(saved).encode())


def take_lock(uid, wait):
    """An exclusive flock on the uid's lock file (open_lock); None when another grade holds it
    and not wait."""
    fd = open_lock(uid)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if not wait:
            os.close(fd)
            return None
        print(f"waiting for another grade of user {uid} to finish (--user {uid})", file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def resolve_user(spec):
    """(uid, gid) for --user NAME, UID, NAME:GROUP or UID:GID (a number needs no account)."""
    name, _, group = str(spec).partition(":")
    try:
        uid = int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        else:
            gid = uid if name.isdigit() else pwd.getpwnam(name).pw_gid
    except KeyError:
        raise SandboxError(f"--user {spec}: no such user or group") from None
    if uid == 0 or gid == 0:
        raise SandboxError(f"--user {spec}: student code must not run as root (uid or gid 0)")
    if not (uid < 2**32 - 1 and gid < 2**32 - 1):
        raise SandboxError(f"--user {spec}: not a valid uid:gid")
    return uid, gid


SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")


def remove_files_of(uid, folders=SHARED_TMP):
    """Remove every file, link and folder of uid's at the top of the shared temporary folders,
    and in the sticky world-writable folders there (/tmp/.X11-unix and the like), without
    following a link: /dev/shm is memory that RLIMIT_AS does not count, and nothing the
    student's code leaves may reach the next job or the next grade."""
    for folder in folders:
        for top in _entries(folder):
            st = _lstat(top)
            if st is None:
                continue
            if st.st_uid == uid:
                _remove(top, st)
            elif stat.S_ISDIR(st.st_mode) and st.st_mode & 0o1002 == 0o1002:
                for inner in _entries(top):
                    inner_st = _lstat(inner)
                    if inner_st is not None and inner_st.st_uid == uid:
                        _remove(inner, inner_st)


def _entries(folder):
    try:
        return [os.path.join(folder, name) for name in os.listdir(folder)]
    except OSError:
        return []


def _lstat(path):
    try:
        return os.lstat(path)
    except OSError:
        return None


def _remove(path, st):
    try:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)             # never follows a link (fd-based where the OS allows)
        else:
            os.unlink(path)
    except OSError:
        pass


def processes_of(uid):
    """Pids of the live processes whose real or effective uid is uid (zombies left out)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8") as f:
                fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        except OSError:
            continue
        uids = fields.get("Uid", "").split()
        if str(uid) in uids[:2] and not fields.get("State", "").strip().startswith(("Z", "X")):
            pids.append(int(entry))
    return pids


# the whole-model job's channel: one request, one reply; a reply is checked before it is used


class ChannelClosed(Exception):
    """The child stopped answering: why ("timeout", "exit status N", "an unreadable reply")."""


WIRE_DTYPES = {"<f8", "<f4", "<i8", "<i4"}      # what a reply's arrays may be
MAX_HEAD = 1 << 16


def encode(head, arrays=()):
    """One message: 4 bytes of header length, the JSON header (with each array's dtype and
    shape), then the arrays' bytes."""
    arrays = [np.asarray(a, order="C") for a in arrays]       # a 0-d array stays 0-d
    head = dict(head, arrays=[[a.dtype.str, list(a.shape)] for a in arrays])
    raw = json.dumps(head).encode()
    return len(raw).to_bytes(4, "big") + raw + b"".join(a.tobytes() for a in arrays)


def decode_head(raw):
    """The header of a message, its arrays' (dtype, shape) and their total bytes; None when it
    is not one (wrong types, a dtype outside WIRE_DTYPES, more than MAX_BYTES in all)."""
    try:
        head = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    specs = head.get("arrays") if isinstance(head, dict) else None
    if not isinstance(specs, list) or len(specs) > 16:
        return None
    shapes, total = [], 0
    for spec in specs:
        if not (isinstance(spec, list) and len(spec) == 2 and spec[0] in WIRE_DTYPES and isinstance(spec[1], list)
                and len(spec[1]) <= 8 and all(type(n) is int and 0 <= n < 2**31 for n in spec[1])):
            return None
        shapes.append((np.dtype(spec[0]), tuple(spec[1])))
        total += math.prod(spec[1]) * np.dtype(spec[0]).itemsize
    return (head, shapes, total) if total <= MAX_BYTES else None


class Channel:
    """The grader's end: call() sends a request and waits for the reply, by the wall clock
    (`step` seconds each, and the job's deadline), reading no more than the header declares
    and MAX_BYTES allows."""

    def __init__(self, child, reading, writing, deadline, step):
        self.child, self.reading, self.writing = child, reading, writing
        self.deadline, self.step = deadline, step

    def call(self, head, arrays=(), step=None):
        """(head, arrays) of the child's reply to this request; raises ChannelClosed."""
        until = min(self.deadline, time.monotonic() + (step or self.step))
        if head is not None:
            self._write(encode(head, arrays), until)
        size = int.from_bytes(self._read(4, until), "big")
        if size > MAX_HEAD:
            raise ChannelClosed("an unreadable reply")
        parsed = decode_head(self._read(size, until))
        if parsed is None:
            raise ChannelClosed("an unreadable reply")
        reply, shapes, total = parsed
        data = self._read(total, until)
        out, at = [], 0
        for dtype, shape in shapes:
            n = math.prod(shape) * dtype.itemsize
            out.append(np.frombuffer(data, dtype, count=math.prod(shape), offset=at).reshape(shape).copy())
            at += n
        return reply, out

    def _read(self, n, until):
        chunks, got = [], 0
        while got < n:
            if not select.select([self.reading], [], [], max(0.0, until - time.monotonic()))[0]:
                raise ChannelClosed("timeout")
            chunk = os.read(self.reading, min(n - got, 1 << 20))
            if not chunk:
                self.child.wait()
                raise ChannelClosed(f"exit status {self.child.returncode}")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _write(self, data, until):
        view = memoryview(data)
        while view:
            if not select.select([], [self.writing], [], max(0.0, until - time.monotonic()))[1]:
                raise ChannelClosed("timeout")
            try:
                view = view[os.write(self.writing, view[:1 << 16]):]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                self.child.wait()
                raise ChannelClosed(f"exit status {self.child.returncode}") from None


def child_receive(fd):
    """The child's end: the grader's next request (trusted), or None when the pipe is closed."""
    def read(n):
        data = b""
        while len(data) < n:
            chunk = os.read(fd, n - len(data))
            if not chunk:
                return None
            data += chunk
        return data
    size = read(4)
    parsed = decode_head(read(int.from_bytes(size, "big")) or b"") if size else None
    if parsed is None:
        return None, []
    head, shapes, total = parsed
    data, at, arrays = read(total) if total else b"", 0, []
    for dtype, shape in shapes:
        arrays.append(np.frombuffer(data, dtype, count=math.prod(shape), offset=at).reshape(shape).copy())
        at += math.prod(shape) * dtype.itemsize
    return head, arrays


def child_send(fd, head, arrays=()):
    data = memoryview(encode(head, arrays))
    while data:
        data = data[os.write(fd, data):]


# the one channel back: read what the child wrote, trusting nothing


def _size(path):
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _records(path, ids):
    """How many distinct records of the given case ids (and the "loaded" line) a results file holds."""
    return len({rec.get("id") for rec in read_lines(path) if rec.get("id") == "loaded" or rec.get("id") in ids})


def read_bytes(path, cap=MAX_BYTES):
    """A regular file's bytes (no symlink, FIFO or device; at most cap), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > cap:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(cap + 1)
        return data if len(data) <= cap else None
    finally:
        os.close(fd)


def read_arrays(path, cap=MAX_BYTES):
    """{name: array} of an uncompressed or deflated .npz, with every size checked before any
    array is made; {} for anything else (a forged header, a zip bomb, pickled objects)."""
    data = read_bytes(path, cap)
    if not data:
        return {}
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
        if len(members) > 64 or sum(m.file_size for m in members) > cap:
            return {}
        arrays = {}
        for m in members:
            if not m.filename.endswith(".npy"):
                return {}
            raw = archive.read(m)
            f = io.BytesIO(raw)
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}[version]
            shape, _, dtype = read_header(f, max_header_size=10_000)
            if dtype.hasobject or dtype.kind not in "biufc" or len(shape) > 8:
                return {}
            if math.prod(shape) * dtype.itemsize != len(raw) - f.tell():
                return {}
            f.seek(0)
            arrays[m.filename[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
        return arrays
    except Exception:                        # noqa: BLE001 (any malformed file is simply not read)
        return {}


def read_lines(path, cap=MAX_BYTES):
    """The JSON objects of a JSON-lines file (others skipped)."""
    data = read_bytes(path, cap)
    out = []
    for line in (data or b"").decode("utf-8", "replace").splitlines()[:10_000]:
        try:
            rec = json.loads(line) if len(line) < 1 << 20 else None
        except (ValueError, RecursionError):
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


STATUSES = {"ok", "missing", "skipped", "not_implemented", "timeout", "error", "uses_minigpt", "bad_return",
            "crashed"}


def _text(v, n=300):
    return v[:n] if isinstance(v, str) else None


def _number(v, integer=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if integer:
        return int(v) if isinstance(v, int) and 0 <= v < 2**53 else None
    return float(v)


def _value(v, arrays):
    """A returned value's description, as runner.as_record makes it."""
    kind = v.get("kind") if isinstance(v, dict) else None
    if kind == "none":
        return {"kind": "none"}
    if kind == "array" and isinstance(v.get("key"), str) and v["key"] in arrays:
        return {"kind": "array", "key": v["key"]}
    out = {"kind": "other", "type": _text(v.get("type"), 40) or "unreadable value"} if kind == "other" else \
        {"kind": "other", "type": "value the grader could not read"}
    if kind == "other" and _number(v.get("length"), True) is not None:
        out["length"] = v["length"]
    return out


def clean_call(d, arrays, way):
    """A forward's or backward's record with only the keys and types the runner writes."""
    if not isinstance(d, dict) or not d:
        return {}
    status = d.get("status")
    if status not in STATUSES:
        return {"status": "unreadable"}
    out = {"status": status}
    for key in ("file", "message", "type", "why"):
        if _text(d.get(key)) is not None:
            out[key] = _text(d[key])
    for key, integer in (("seconds", False), ("printed", True), ("length", True)):
        if _number(d.get(key), integer) is not None:
            out[key] = _number(d[key], integer)
    if isinstance(d.get("printed_text"), str):
        out["printed_text"] = d["printed_text"][:300]
    if isinstance(d.get("modified"), list) and "cache" in d["modified"]:   # inputs and dout: the grader's to say
        out["modified"] = ["cache"]
    if way == "forward" and "out" in d:
        out["out"] = _value(d["out"], arrays)
    if way == "backward" and isinstance(d.get("grads"), list):
        out["grads"] = [_value(g, arrays) for g in d["grads"][:8]]
    if status == "ok" and ("out" if way == "forward" else "grads") not in out:
        return {"status": "unreadable"}
    return out


def _drop_grader_keys(arrays):
    """Finite differences are the grader's alone: any fd_ array the child wrote is dropped."""
    for key in [k for k in arrays if k.startswith("fd_")]:
        arrays.pop(key)


def read_results(job, fd_sizes, trusted=()):
    """{case id: (record, arrays)}, the import error (or None): what the child wrote to its
    outbox, each record cut down to what the runner writes, and `trusted` records of the
    grader's own. fd_sizes: {case id: {input index: its size}}, the only case ids read."""
    records, import_error = {}, None
    for rec in read_lines(job.outbox / "results.jsonl") + list(trusted):
        rid = rec.get("id")
        if rid == "import":
            import_error = _text(str(rec.get("error")), 500)
        elif rid == "printed":                    # what the student's code printed: for the report
            records.setdefault("printed", []).append((_number(rec.get("count"), True) or 0,
                                                      _text(rec.get("head"), 4096) or ""))
        elif rid == "loaded":
            records["loaded"] = True
        elif isinstance(rid, str) and rid in fd_sizes:
            arrays = read_arrays(job.outbox / f"out_{rid}.npz")
            _drop_grader_keys(arrays)
            clean = {"id": rid, "forward": clean_call(rec.get("forward"), arrays, "forward"),
                     "backward": clean_call(rec.get("backward"), arrays, "backward")}
            if "again" in rec:                    # the forward's second call (its output: again_out)
                clean["again"] = clean_call(rec.get("again"), arrays, "forward")
            records[rid] = (clean, arrays)
    return records, import_error


def last_call(job, case_id):
    """The student function the child said it was in when it stopped (its progress file)."""
    lines = (read_bytes(job.outbox / "progress.txt") or b"").decode("utf-8", "replace").split()
    calls = list(zip(lines[::2], lines[1::2]))
    return calls[-1][1] if calls and calls[-1][0] == case_id else None
