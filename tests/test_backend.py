"""backend.py: module lookup, device errors, scatter_add; CuPy equality when a GPU is present."""
import numpy as np
import pytest

from minigpt import backend


def test_array_module_of_numpy_arrays_is_numpy():
    assert backend.array_module(np.zeros(2), np.ones(3)) is np
    assert backend.xp_for("cpu") is np


def test_unknown_device_is_a_clear_error():
    with pytest.raises(backend.DeviceError, match="unknown device 'tpu'"):
        backend.resolve_device("tpu")


def test_cuda_without_cupy_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", lambda: None)
    with pytest.raises(backend.DeviceError, match="pip install cupy-cuda12x"):
        backend.xp_for("cuda")
    assert backend.resolve_device("auto") == "cpu"


def test_scatter_add_sums_repeated_indices():
    target = np.zeros((4, 2))
    backend.scatter_add(target, np.array([1, 3, 1, 1]), np.arange(8.0).reshape(4, 2))
    np.testing.assert_array_equal(target, [[0, 0], [0 + 4 + 6, 1 + 5 + 7], [0, 0], [2, 3]])


def test_to_numpy_passes_numpy_through():
    a = np.arange(3)
    assert backend.to_numpy(a) is a
