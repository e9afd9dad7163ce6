"""Writing files so that nothing is ever half-written, and hashing what is read.

    atomic_write("out/ckpt.npz", lambda f: np.savez(f, **arrays))
    file_digest("shakespeare.txt")                 # 'd3c4...': SHA-256 of the bytes

Every file minigpt writes (checkpoints, the token cache, metrics, plots,
safetensors exports) goes through `atomic_write`: a crash, a kill or a full
disk midway leaves the previous file as it was.
"""
import hashlib
import os
import tempfile

TMP_PREFIX = ".tmp-"           # minigpt's own temporary files start with this


def file_digest(path):
    """SHA-256 of a file's bytes (hex), read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path, write):
    """Replace `path` all at once: call write(f) on a temporary file in the same folder,
    flush it to disk, then rename it over `path`. A crash or a full disk midway leaves
    the old file intact and no temporary file behind.

    write: a function of one binary file object, e.g. `lambda f: f.write(b"...")`.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)               # mkstemp makes 0600; use the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
