"""Where NumPy and CuPy meet: the only module in minigpt that imports CuPy.

Layers never ask "which library am I on?": they use operators and array
methods, which mean the same on NumPy and CuPy. A function that has to create
a new array asks `array_module(x)` for the module that owns `x`. Every device
difference lives in this file.
"""
import ctypes
import os
import sys
import threading
import time

import numpy as np

CUPY_PIP_PACKAGE = "cupy-cuda12x"


def _keep_freed_memory_in_heap():
    """Ask glibc to recycle freed arrays instead of handing them back to the OS.

    By default glibc serves each allocation over ~128 KiB-32 MiB with a fresh
    mmap and returns it on free, so every temporary in a training step is
    zero-filled by the kernel page by page on first touch. Raising the mmap
    and trim thresholds keeps freed blocks in the heap for the next step.
    Measured here: GELU backward 1.9 ms -> 0.35 ms on a (768, 512) float32
    array, training step +25-40% on small models. Host memory only (CuPy has
    its own pool); a no-op where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3            # from glibc's malloc.h
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)                # up to 1 GiB from the heap
        libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)          # keep up to 2 GiB free in it
    except (OSError, AttributeError):                          # musl, no libc.so.6, ...
        pass


_keep_freed_memory_in_heap()


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


def _cupy():
    """Return the cupy module, or None when it is not installed."""
    try:
        import cupy
    except Exception:  # ImportError, or a broken CUDA install raising on import
        return None
    return cupy


def array_module(*arrays):
    """Return the module (numpy or cupy) that owns the given arrays.

    >>> array_module(np.zeros(3)) is np
    True
    """
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy
            return cupy
    return np


def gpu_available():
    """True when CuPy is installed and sees at least one CUDA device."""
    cupy = _cupy()
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def resolve_device(device):
    """Map "cpu" | "cuda" | "auto" to "cpu" or "cuda"; raise DeviceError if impossible."""
    if device == "auto":
        return "cuda" if gpu_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        if _cupy() is None:
            raise DeviceError(
                f"--device cuda needs CuPy, which is not installed: "
                f"pip install {CUPY_PIP_PACKAGE} (or use --device cpu)")
        if not gpu_available():
            raise DeviceError("--device cuda: CuPy is installed but sees no CUDA GPU (use --device cpu)")
        return "cuda"
    raise DeviceError(f"unknown device {device!r}: choose cpu, cuda or auto")


def xp_for(device):
    """Return the array module for a device name ("cpu", "cuda" or "auto")."""
    return _cupy() if resolve_device(device) == "cuda" else np


def to_numpy(x):
    """Return x as a NumPy array (a no-op for NumPy arrays and Python numbers)."""
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)


def to_device(x, device):
    """Copy a NumPy array to the given device ("cpu" returns a NumPy array)."""
    if resolve_device(device) == "cuda":
        return _cupy().asarray(x)
    return to_numpy(x)


def scatter_add(target, indices, values):
    """In place: target[indices[i]] += values[i], summing repeated indices.

    target: (V, C); indices: (N,) integers; values: (N, C).
    Plain fancy-index `+=` would keep only one of the repeated rows.
    """
    if type(target).__module__.startswith("cupy"):
        import cupyx
        cupyx.scatter_add(target, indices, values)
        return target
    if indices.size == 0:
        return target
    # np.add.at goes one row at a time; instead sort the indices and sum each run of
    # equal ones with one reduceat. Measured here: 1.3 -> 0.3 ms for 768 rows of 128,
    # 35-50 -> 2-14 ms for 2048 rows of 384 (equal to rounding: another summation order).
    order = np.argsort(indices, kind="stable")
    sorted_indices = indices[order]
    starts = np.flatnonzero(np.r_[True, sorted_indices[1:] != sorted_indices[:-1]])
    target[sorted_indices[starts]] += np.add.reduceat(values[order], starts, axis=0)
    return target


def default_rng(xp, seed):
    """A random Generator on the same device as module `xp` (numpy or cupy)."""
    return xp.random.default_rng(seed)


# ---------------------------------------------------------------- host threads
#
# NumPy runs one ufunc on one core, but it releases the GIL while it loops, so
# two Python threads working on different rows of the same arrays really do run
# in parallel. `parallel_rows` is the place that does this: a layer writes its
# elementwise math as a kernel on a block of rows (ordinary array code that
# writes its results into output arrays), and this helper hands out the blocks.
# `matmul` does the same for the blocks of a matrix product. Every block's BLAS
# call runs single-threaded, on whichever thread took the block, first come
# first served. Measured on this project's shared 2-core machine, that beats
# letting OpenBLAS thread each product itself: a BLAS thread that the OS does
# not run right away stalls the whole product (OpenBLAS splits it evenly up
# front), and the small per-head products of attention each paid that stall.

# Measured on a quiet 2-core machine (GELU backward, 2 threads vs 1): 0.6x at 128K
# elements, 1.0x at 512K, 1.3x at 1M, 2.3-3.3x from 2M up with 256K-element blocks.
# Below ~1M each NumPy call in a kernel is so short that handing the GIL back and
# forth between the threads (a futex wake-up each time, ~25 us here) costs more than
# the second core gives; above it, the second core and its own L2 win.
BLOCK_ELEMENTS = 1 << 18         # 1 MiB of float32 per block and array
MIN_PARALLEL_ELEMENTS = 1 << 20  # below this, one thread does the whole kernel
MATMUL_BLOCKS_PER_THREAD = 2     # more blocks even out a busy machine; each block repacks an operand
MIN_PARALLEL_FLOPS = 1 << 22
LEAVE_BUSY_CORES = True          # use only the cores other processes leave free (see _free_cores)
_host_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_pool, _pool_size = None, 0


def host_threads(n=None):
    """The number of threads `parallel_rows` and `matmul` use on the host; set it with n.

    Returns the old value. Default: the cores this process may run on.
    """
    global _host_threads
    old = _host_threads
    if n is not None:
        _host_threads = max(1, int(n))
    return old


def parallel_rows(kernel, *arrays, **constants):
    """Call kernel(*blocks, **constants) on matching row blocks of the arrays, over all cores.

    arrays: NumPy or CuPy arrays sharing their first axis (length N), the
    kernel's inputs and outputs; constants: passed whole to every call. The
    kernel must treat each row on its own (elementwise or row-wise math), so
    any split of the rows gives the same bits. On the host the rows are cut
    into blocks of about BLOCK_ELEMENTS (at least one per thread), and each of
    `host_threads()` threads, this one included, takes the next block until
    none is left: on a busy machine a thread that is not running simply takes
    fewer blocks, instead of holding up the others. On a GPU, or for small
    arrays, it is a single call: kernel(*arrays, **constants).
    """
    first = arrays[0]
    N = first.shape[0] if first.ndim else 0
    n_threads = min(_host_threads, N)
    if array_module(first) is not np:
        kernel(*arrays, **constants)
        return
    if first.size < MIN_PARALLEL_ELEMENTS or n_threads < 2:
        with _single_threaded_blas():
            kernel(*arrays, **constants)
        return
    per_thread = -(-first.size // (BLOCK_ELEMENTS * n_threads))      # blocks per thread, rounded up
    rows = -(-N // (per_thread * n_threads))                       # rows per block, rounded up
    _share_out(lambda s: kernel(*(a[s:s + rows] for a in arrays), **constants),
               range(0, N, rows), n_threads)



def matmul(a, b):
    """a @ b for 2-D arrays, with the product cut into blocks shared out over the host threads.

    The rows of a are cut (or the columns of b, when those are more), each block
    is one single-threaded BLAS call, and threads take blocks as in parallel_rows.
    Equal to a @ b up to rounding (BLAS may round a block's edge rows differently).
    On a GPU, when small, or when this BLAS's threads cannot be set per thread
    (not OpenBLAS), it is just a @ b, threaded by BLAS itself.
    """
    M, K = a.shape
    N = b.shape[1]
    if array_module(a) is not np or _openblas_set_num_threads_local is None:
        return a @ b
    n_threads = min(_host_threads, _free_cores()) if 2 * M * K * N >= MIN_PARALLEL_FLOPS else 1
    if n_threads < 2:
        with _single_threaded_blas():
            return a @ b
    out = np.empty((M, N), dtype=np.result_type(a, b))
    n_blocks = n_threads * MATMUL_BLOCKS_PER_THREAD
    if M >= N:                                     # out[i:i+n] = a[i:i+n] @ b
        n = -(-M // n_blocks)
        _share_out(lambda i: np.matmul(a[i:i + n], b, out=out[i:i + n]), range(0, M, n), n_threads)
    else:                                          # out[:, j:j+n] = a @ b[:, j:j+n]
        n = -(-N // n_blocks)
        _share_out(lambda j: np.matmul(a, b[:, j:j + n], out=out[:, j:j + n]), range(0, N, n), n_threads)
    return out


def _share_out(task, starts, n_threads):
    """Run task(start) for every start, on n_threads threads (this one too), first come first served."""
    n_threads = min(n_threads, _free_cores())
    blocks = _Blocks(starts)

    def work():
        for start in blocks:
            try:
                if blocks.error is None:
                    task(start)
            except BaseException as e:             # kept for the caller; the rest are skipped
                blocks.error = blocks.error or e
            finally:
                blocks.finished_one()

    for _ in range(n_threads - 1):
        _thread_pool().submit(work)
    with _single_threaded_blas():
        work()                                     # this thread works too
    blocks.wait()                                  # for blocks still running on other threads
    if blocks.error is not None:
        raise blocks.error


def _free_cores():
    """How many cores are ours to use now: the host's, less those other processes keep busy.

    On a machine whose cores are all taken by other work, a second thread of ours
    mostly waits for the OS, and while it waits, holding a block or the GIL, it
    stalls the thread that waits for it: measured here, config A's step went from
    81 ms on one thread to 325 ms on two when other processes kept the cores busy.
    So count the runnable threads (/proc/loadavg, a smoothed sample every 0.1 s),
    less this one, and leave their cores alone. Without /proc: all cores.
    """
    global _busy_elsewhere, _checked_at
    if not LEAVE_BUSY_CORES:
        return _host_threads
    now = time.monotonic()
    if now - _checked_at > 0.1:
        _checked_at = now
        try:
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])   # "4/93": runnable/all
        except (OSError, ValueError, IndexError):
            return _n_cores
        busy = max(0, running - 1)
        _busy_elsewhere = busy if _busy_elsewhere is None else 0.7 * _busy_elsewhere + 0.3 * busy
    return max(1, _n_cores - round(_busy_elsewhere))


_n_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_busy_elsewhere, _checked_at = None, -1.0


class _Blocks:
    """Hands out the block starts, each to the first thread that asks; wait() until all are done."""

    def __init__(self, starts):
        self.starts = list(starts)
        self.error = None
        self._next = 0
        self._unfinished = len(self.starts)
        self._lock = threading.Lock()
        self._done = threading.Event()

    def __iter__(self):
        while True:
            with self._lock:
                i = self._next
                self._next += 1
            if i >= len(self.starts):
                return
            yield self.starts[i]

    def finished_one(self):
        with self._lock:
            self._unfinished -= 1
            if self._unfinished == 0:
                self._done.set()

    def wait(self):
        self._done.wait()


def _thread_pool():
    """The worker threads (host_threads() - 1 of them), started on first use; their BLAS is single-threaded."""
    global _pool, _pool_size
    if _pool is None or _pool_size < _host_threads - 1:
        from concurrent.futures import ThreadPoolExecutor
        _pool_size = max(1, _host_threads - 1)
        _pool = ThreadPoolExecutor(max_workers=_pool_size, thread_name_prefix="minigpt",
                                   initializer=_blas_threads_here, initargs=(1,))
    return _pool


def _find_openblas_local_threads():
    """OpenBLAS's openblas_set_num_threads_local (0.3.27+), as loaded by NumPy, or None.

    It sets the number of BLAS threads for calls made from the calling thread only.
    """
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
        for path in sorted(paths):
            lib = ctypes.CDLL(path)
            fn = getattr(lib, "openblas_set_num_threads_local", None)
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
                return fn
    except OSError:
        pass
    return None                                    # MKL, Accelerate, an older OpenBLAS: left alone


_openblas_set_num_threads_local = _find_openblas_local_threads()


def _blas_threads_here(n):
    """Set this thread's BLAS threads (0: back to the global setting); returns the old value or None."""
    if _openblas_set_num_threads_local is None:
        return None
    return _openblas_set_num_threads_local(n)


class _single_threaded_blas:
    """with _single_threaded_blas(): BLAS calls from this thread run on this thread alone."""

    def __enter__(self):
        _blas_threads_here(1)

    def __exit__(self, *exc):
        _blas_threads_here(0)                      # 0: back to the process-wide setting


def enable_tf32():
    """Let CuPy's float32 matmuls use TF32 tensor cores (Ampere and newer GPUs).

    TF32 keeps float32's range but rounds the products' inputs to 10 bits of
    mantissa: much faster matmuls, slightly different numbers. Opt-in
    (`--tf32`); strict float32 is the default. Raises DeviceError without CuPy.
    """
    cupy = _cupy()
    if cupy is None:
        raise DeviceError(f"--tf32 needs CuPy, which is not installed: pip install {CUPY_PIP_PACKAGE}")
    from cupy._core import _routines_linalg as linalg   # where CuPy keeps its compute-type switch
    linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32)
