"""The OpenBLAS that NumPy loaded, found and steered through its own C functions (ctypes).

Found from /proc/self/maps, so this works whatever prefix a NumPy wheel gives
OpenBLAS's symbols; with MKL, Accelerate or an older OpenBLAS every function
here does nothing. Two jobs: make OpenBLAS's idle threads sleep at once after
a product whichever of NumPy and minigpt was imported first
(`_apply_thread_timeout`, run on import), and set BLAS threads for the whole
process or for the calling thread only (`set_num_threads`, `threads_here`),
which backend.py's host threads use.
"""
import ctypes
import os

import numpy  # noqa: F401  (loads OpenBLAS, which this module looks for)


def _load_openblas():
    """The OpenBLAS libraries loaded in this process (NumPy's among them), from /proc/self/maps."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower()})
        return [ctypes.CDLL(path) for path in paths]
    except OSError:
        return []


def _openblas_function(libs, *names):
    """The first of the OpenBLAS functions `names` (int -> int) in libs, or None.

    openblas_set_num_threads_local (0.3.27+) sets the BLAS threads for calls
    made from the calling thread only; openblas_set_num_threads, for all.
    """
    for lib in libs:
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
                return fn
    return None                                    # MKL, Accelerate, an older OpenBLAS: left alone


def _apply_thread_timeout(libs):
    """Make OpenBLAS use OPENBLAS_THREAD_TIMEOUT now, even if it loaded (with NumPy) before it was set.

    OpenBLAS reads its environment once, when it loads, so an `import numpy`
    before `import minigpt` would keep the 0.1 s spin. Where OpenBLAS has not
    taken the value: re-read the environment (openblas_read_env) and stop its
    idle threads (blas_thread_shutdown_); the next product starts them again,
    reading the new timeout. Same threads, same results, just shorter spins.
    """
    try:
        wanted = int(os.environ.get("OPENBLAS_THREAD_TIMEOUT", ""))
    except ValueError:
        return                                     # unset, or not a number: OpenBLAS's own choice
    for lib in libs:
        taken, read_env, shutdown = (getattr(lib, name, None) for name in (
            "openblas_thread_timeout", "openblas_read_env", "blas_thread_shutdown_"))
        if taken is None or read_env is None or shutdown is None:
            continue                               # an OpenBLAS without these: left alone
        taken.restype = ctypes.c_int
        if taken() != wanted:
            read_env()
            shutdown()


LIBS = _load_openblas()                            # read /proc/self/maps once
_apply_thread_timeout(LIBS)
_set_num_threads_local = _openblas_function(LIBS, "openblas_set_num_threads_local")
_set_num_threads = _openblas_function(             # NumPy's wheels name it with their own prefix
    LIBS, "openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads")


def set_num_threads(n):
    """Set OpenBLAS's threads for the whole process (a no-op without OpenBLAS)."""
    if _set_num_threads is not None:
        _set_num_threads(n)


def threads_here(n):
    """Set this thread's BLAS threads (0: back to the global setting); returns the old value or None."""
    if _set_num_threads_local is None:
        return None
    return _set_num_threads_local(n)
