"""Where NumPy and CuPy meet: the only module in minigpt that imports CuPy.

Layers never ask "which library am I on?": they use operators and array
methods, which mean the same on NumPy and CuPy. A function that has to create
a new array asks `array_module(x)` for the module that owns `x`. Every device
difference lives in this file.
"""
import numpy as np

CUPY_PIP_PACKAGE = "cupy-cuda12x"


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
    else:
        np.add.at(target, indices, values)
    return target


def default_rng(xp, seed):
    """A random Generator on the same device as module `xp` (numpy or cupy)."""
    return xp.random.default_rng(seed)
