"""The one safe way to write a file, and safe ways to read one.

    with claim_dir("out"):                         # writable? locked against a second run;
        atomic_write("out/ckpt.npz", lambda f: np.savez(f, **arrays))   # stale temporaries gone
    file_digest("shakespeare.txt")                 # 'd3c4...': SHA-256 of the bytes
    loads_json(text)                               # json.loads, refusing absurd nesting
    read_bytes(path)                               # a file, a pipe or /dev/fd/63, read once
    require_regular_file(path, "checkpoint")       # refuses a FIFO (which would hang) unopened
    read_regular(path, "GPT-2 config")            # bytes of a regular file; a FIFO refused, never waited on
    refuse_link(path)                              # an output name that is a symbolic link is refused

Every file minigpt writes (checkpoints, the token cache, metrics, plots,
safetensors exports) goes through `atomic_write`: a crash, a kill or a full
disk midway leaves the previous file as it was. Writing fails with a
`FileError`, whose message is one line naming the file and the reason.
"""
import hashlib
import json
import os
import re
import stat
import tempfile
from contextlib import contextmanager

try:
    import fcntl                               # POSIX; elsewhere the out-dir is not locked
except ImportError:                            # pragma: no cover
    fcntl = None

TMP_PREFIX = ".tmp-"           # minigpt's own temporary files start with this
LOCK_NAME = ".minigpt.lock"    # held (flock) by the run writing into a folder
MAX_JSON_DEPTH = 100           # deeper JSON is refused (no minigpt file nests more than 4)
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


class FileError(OSError):
    """A file or folder minigpt cannot safely read or write; the message says which and why."""


def _reason(e):
    return e.strerror or str(e) or type(e).__name__


def file_digest(path):
    """SHA-256 of a file's bytes (hex), read in blocks."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path, write):
    """Replace `path` all at once: call write(f) on a temporary file in the same folder,
    flush it to disk, then rename it over `path`. A crash or a full disk midway leaves
    the old file intact and no temporary file behind (a kill -9 leaves a temporary
    file, which `claim_dir` removes at the next run). An OSError becomes a FileError.

    write: a function of one binary file object, e.g. `lambda f: f.write(b"...")`.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)               # mkstemp makes 0600; use the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.remove(tmp)
            except OSError:
                pass
        if isinstance(e, OSError) and not isinstance(e, FileError):
            raise FileError(f"cannot write {path} ({_reason(e)}); the previous file is kept") from None
        raise


def _probe_writable(folder):
    """FileError unless a file can be created in folder (the check a read-only folder fails)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise FileError(f"cannot write into {folder} ({_reason(e)}): give a writable --out-dir") from None


def remove_stale_temporaries(folder):
    """Delete the temporary files an earlier, killed minigpt run left in folder."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(TMP_PREFIX) and os.path.isfile(path) and not os.path.islink(path):
            try:
                os.remove(path)
            except OSError:
                pass


def check_folder(folder):
    """FileError if folder names something other than a folder or nothing: a file, or a symbolic
    link that leads nowhere (dangling, or a loop), which makedirs could not create."""
    if os.path.islink(folder) and not os.path.exists(folder):
        raise FileError(f"{folder} is a symbolic link that leads to no folder (dangling, or a loop): "
                        f"remove it, or give another --out-dir")
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise FileError(f"{folder} is a file, not a folder: give another --out-dir")


@contextmanager
def claim_dir(folder, scratch=()):
    """Make folder (if needed), check it is writable, lock it for the duration, and remove
    stale temporary files. A second claim, by any process, is a FileError until released.

    If the body fails (an exception), what the claim made goes again: the lock file, if it
    made it, and the folder, if it made it and nothing but the files named in `scratch` (a
    cache) is in it, so a bad input found late leaves no new folder and no lock behind."""
    folder = os.fspath(folder)
    check_folder(folder)
    made_folder = not os.path.isdir(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise FileError(f"cannot create the folder {folder} ({_reason(e)})") from None
    lock_path, lock, made_lock = os.path.join(folder, LOCK_NAME), None, False
    try:
        _probe_writable(folder)
        lock, made_lock = _open_lock(lock_path)
        if fcntl is not None:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.seek(0)
                pid = lock.read().strip() or "?"
                raise FileError(f"another minigpt run is using {folder} (pid {pid}): wait for it "
                                f"to finish, or give another --out-dir") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        remove_stale_temporaries(folder)
        yield folder
    except BaseException:
        _undo_claim(folder, lock_path if made_lock else None, made_folder, scratch)
        raise
    finally:
        if lock is not None:
            lock.close()                           # closing the file releases the lock


def _undo_claim(folder, lock_path, made_folder, scratch):
    """Remove the lock file a failed claim made (while still holding it) and the folder it made,
    if only `scratch` files and minigpt's temporaries are left in it."""
    for path in [lock_path] * (lock_path is not None):
        try:
            os.remove(path)
        except OSError:
            pass
    if not made_folder:
        return
    try:
        names = os.listdir(folder)
        if all(n in scratch or n.startswith(TMP_PREFIX) for n in names):
            for n in names:
                path = os.path.join(folder, n)
                if os.path.isfile(path) and not os.path.islink(path):
                    os.remove(path)
            os.rmdir(folder)
    except OSError:
        pass


def _no_duplicate_keys(pairs):
    """object_pairs_hook: a JSON object that names a key twice is a ValueError naming it
    (json.loads would silently keep the last value)."""
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"duplicate key {k!r} in a JSON object")
            seen.add(k)
    return d


def loads_json(text, **kwargs):
    """json.loads, but nesting deeper than MAX_JSON_DEPTH is a ValueError, not a RecursionError,
    and an object that repeats a key is a ValueError naming the key.

    >>> loads_json('{"a": [1, "]["]}')
    {'a': [1, '][']}
    """
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:     # only then can it nest that deep
        depth = deepest = 0
        for ch in re.findall(r"[\[\]{}]", _JSON_STRING.sub('""', text)):
            depth += 1 if ch in "[{" else -1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
    kwargs.setdefault("object_pairs_hook", _no_duplicate_keys)
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep") from None


def _open_lock(lock_path):
    """(the lock file, True if this call created it), opened read-write without following a
    symbolic link, without waiting on a FIFO and without truncating anything; FileError unless it is a regular file with one name
    (a hard link planted there would make the pid overwrite a file outside the folder)."""
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    made = True
    try:
        try:
            fd = os.open(lock_path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:                # a stale lock, or another run's
            made = False
            fd = os.open(lock_path, flags)
    except OSError as e:
        if os.path.islink(lock_path):
            raise FileError(f"{lock_path} is a symbolic link: minigpt never writes through one; "
                            f"remove it, or give another --out-dir") from None
        raise FileError(f"cannot write {lock_path} ({_reason(e)}): give a writable --out-dir") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileError(f"{lock_path} is not a regular file: remove it, or give another --out-dir")
    if st.st_nlink != 1:                       # a hard link: writing the pid would change another name's file
        os.close(fd)
        raise FileError(f"{lock_path} has {st.st_nlink} names (a hard link to a file elsewhere?): "
                        f"minigpt never writes into a file that is also another; remove it, or give "
                        f"another --out-dir")
    return os.fdopen(fd, "r+"), made


def refuse_link(path, what="file"):
    """FileError if path is a symbolic link (a file minigpt writes is never written through one)."""
    if os.path.islink(path):
        raise FileError(f"{path} is a symbolic link: minigpt never writes through one, so it would "
                        f"replace the link; remove it, or give another --out-dir")


def open_regular(path, what="file"):
    """A regular file opened for binary reading; FileError for a missing path, a folder, a FIFO or
    a device. The file is opened without blocking and checked on its descriptor, so a FIFO is
    refused at once (never waited on) and nothing changes between the check and the read."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileError(f"no {what} at {path}") from None
    except IsADirectoryError:
        raise FileError(f"{path} is a directory, not a {what}") from None
    except OSError as e:
        raise FileError(f"cannot read {path}: {_reason(e)}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise FileError(f"{path} is a directory, not a {what}")
        raise FileError(f"{path} is not a regular file (a pipe or a device?): a {what} must be "
                        f"a file on disk")
    if hasattr(os, "O_NONBLOCK") and hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(path, what="file"):
    """All the bytes of a regular file (see open_regular); FileError otherwise."""
    with open_regular(path, what) as f:
        try:
            return f.read()
        except OSError as e:
            raise FileError(f"cannot read {path}: {_reason(e)}") from None


def read_regular_text(path, what="file"):
    """The UTF-8 text of a regular file; FileError if it is not one, ValueError if not UTF-8."""
    raw = read_regular(path, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start})") from None


def loads_versioned(text, fmt, version, what):
    """The JSON object in text, if its "format" is fmt and its "version" is version;
    otherwise a ValueError that names `what` (e.g. "tokenizer") and the problem."""
    try:
        d = loads_json(text)
    except (ValueError, TypeError) as e:
        raise ValueError(f"not a minigpt {what}: invalid JSON ({e})") from None
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise ValueError(f'not a minigpt {what}: no "format": "{fmt}" field')
    if d.get("version") != version:
        raise ValueError(f"minigpt {what} version {d.get('version')!r} is not supported "
                         f"(this minigpt reads version {version})")
    return d


def read_bytes(path):
    """All the bytes of a file, read once: a regular file, a pipe, a FIFO or /dev/fd/N
    (process substitution) alike. FileError for a missing path or a folder."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileError(f"no such file: {path}")
    if os.path.isdir(path):
        raise FileError(f"{path} is a directory, not a file")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise FileError(f"cannot read {path}: {_reason(e)}") from None


def require_regular_file(path, what):
    """FileError unless path is a regular file; a FIFO or a device is refused without
    being opened (opening a FIFO with no writer would wait forever)."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise FileError(f"no {what} at {path}") from None
    if stat.S_ISDIR(mode):
        raise FileError(f"{path} is a directory, not a {what} file")
    if not stat.S_ISREG(mode):
        raise FileError(f"{path} is not a regular file (a pipe or a device?): a {what} must be "
                        f"a file on disk")
    return path
