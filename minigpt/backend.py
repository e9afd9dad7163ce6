"""Where NumPy and CuPy meet: the only module in minigpt that imports CuPy.

Layers never ask "which library am I on?": they use operators and array
methods, which mean the same on NumPy and CuPy. A function that has to create
a new array asks `array_module(x)` for the module that owns `x`. Every device
difference lives in this file (the fused GPU kernels' CUDA source is in
gpu_kernels.py, which backend hands the cupy module).
"""
import ctypes
import os
import sys
import threading

import numpy as np

from . import gpu_kernels, openblas

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


def select_gpu(n):
    """Make GPU n % device_count the current one (one process per GPU); its index, or None without one."""
    if not gpu_available():
        return None
    cupy = _cupy()
    index = n % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(index).use()
    return index


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
# Matrix products are BLAS's job: `a @ b` runs OpenBLAS on every core, at the
# machine's matmul peak. Everything else NumPy runs on one core, but it releases
# the GIL while it loops, so two Python threads working on different rows of the
# same arrays really do run in parallel. `parallel_rows` is the place that does
# this: a layer writes its elementwise math as a kernel on a block of rows
# (ordinary array code that writes its results into output arrays), and this
# helper hands out the blocks. BLAS calls inside a kernel (attention's per-head
# products) run single-threaded there: the blocks are the parallelism.
#
# OpenBLAS's idle threads spin for about 2^28 cycles (0.1 s) after each product
# before they sleep, taking a core from the elementwise threads that run next;
# minigpt/__init__.py lowers that (OPENBLAS_THREAD_TIMEOUT), and
# minigpt/openblas.py makes OpenBLAS take it whether NumPy or minigpt was
# imported first. Measured on config B (6 x 384, block 256): attention
# 259 -> 166 ms and GELU 60 -> 39 ms per step, matmuls unchanged.

# Measured on a quiet 2-core machine, 2 threads vs 1 (256K-element blocks): LayerNorm
# on (768, 128), 98K elements: 0.56x (0.148 -> 0.263 ms); GELU backward on (768, 512),
# 393K: 1.24x; LayerNorm backward on (2048, 384), 786K: 1.48x; GELU on 3M: 2.4x.
# Below ~256K each NumPy call in a kernel is so short that handing the GIL back and
# forth between the threads (a futex wake-up each time, ~25 us here) costs more than
# the second core gives; above it, the second core and its own L2 win.
BLOCK_ELEMENTS = 1 << 18         # 1 MiB of float32 per block and array
MIN_PARALLEL_ELEMENTS = 1 << 18  # below this, one thread does the whole kernel
_host_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_pool, _pool_size = None, 0


def host_threads(n=None):
    """The number of threads `parallel_rows` and BLAS use on the host; set it with n.

    Returns the old value. Default: the cores this process may run on.
    """
    global _host_threads
    old = _host_threads
    if n is not None:
        _host_threads = max(1, int(n))
        openblas.set_num_threads(_host_threads)
    return old


def parallel_rows(kernel, *arrays, **constants):
    """Call kernel(*blocks, **constants) on matching row blocks of the arrays, over all cores.

    arrays: NumPy or CuPy arrays sharing their first axis (length N), the
    kernel's inputs and outputs; constants: passed whole to every call. The
    kernel must treat each row on its own (elementwise or row-wise math), so
    any split of the rows gives the same result (the same bits, but for BLAS
    grouping a row reduction's sums differently in a short block). On the host
    the rows are cut into blocks of about BLOCK_ELEMENTS (at least one per
    thread), and each of `host_threads()` threads, this one included, takes the
    next block until none is left: on a busy machine a thread that is not
    running simply takes fewer blocks, instead of holding up the others. Small
    arrays get a single call: kernel(*arrays, **constants). On a GPU it is a
    single call too, of the kernel's fused version when `fused_gpu_kernels()`
    has one (one launch, the same math; see the GPU kernels section).
    """
    first = arrays[0]
    N = first.shape[0] if first.ndim else 0
    n_threads = min(_host_threads, N)
    if array_module(first) is not np:
        fused_gpu_kernels().get(kernel.__name__, kernel)(*arrays, **constants)
        return
    if first.size < MIN_PARALLEL_ELEMENTS or n_threads < 2:
        with _single_threaded_blas():
            kernel(*arrays, **constants)
        return
    per_thread = -(-first.size // (BLOCK_ELEMENTS * n_threads))      # blocks per thread, rounded up
    rows = -(-N // (per_thread * n_threads))                       # rows per block, rounded up
    _share_out(lambda s: kernel(*(a[s:s + rows] for a in arrays), **constants),
               range(0, N, rows), n_threads)


def _share_out(task, starts, n_threads):
    """Run task(start) for every start, on n_threads threads (this one too), first come first served."""
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
                                   initializer=openblas.threads_here, initargs=(1,))
    return _pool


class _single_threaded_blas:
    """with _single_threaded_blas(): BLAS calls from this thread run on this thread alone."""

    def __enter__(self):
        openblas.threads_here(1)

    def __exit__(self, *exc):
        openblas.threads_here(0)                   # 0: back to the process-wide setting


def enable_tf32(device="cuda"):
    """Let CuPy's float32 matmuls use TF32 tensor cores (Ampere and newer GPUs).

    TF32 keeps float32's range but rounds the products' inputs to 10 bits of
    mantissa: much faster matmuls, slightly different numbers. Opt-in
    (`--tf32`); strict float32 is the default. device: the run's resolved
    device; DeviceError on the CPU (there is no TF32 there) or without CuPy.
    """
    if device != "cuda":
        raise DeviceError(f"--tf32 is for GPUs (TF32 tensor cores), but this run is on the {device}: "
                          f"drop --tf32, or use --device cuda on a machine with a GPU")
    cupy = _cupy()
    if cupy is None:
        raise DeviceError(f"--tf32 needs CuPy, which is not installed: pip install {CUPY_PIP_PACKAGE}")
    from cupy._core import _routines_linalg as linalg   # where CuPy keeps its compute-type switch
    linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32)


# ---------------------------------------------------------------- GPU kernels
#
# On a GPU each line of a row kernel is a kernel launch over whole arrays; for the
# hottest ones minigpt/gpu_kernels.py has the same formulas as one CUDA loop body.

_fused_kernels = None


def fused_gpu_kernels():
    """{row kernel's name: fused CuPy replacement with the same signature}; {} without CuPy.

    Built on the first call (minigpt.gpu_kernels), then cached.
    """
    global _fused_kernels
    if _fused_kernels is None:
        cupy = _cupy()
        if cupy is None:
            return {}
        _fused_kernels = gpu_kernels.build(cupy)
    return _fused_kernels
