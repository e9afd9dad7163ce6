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


# ---------------------------------------------------------------- on a GPU

def _cupy_or_skip():
    cupy = pytest.importorskip("cupy")
    if not backend.gpu_available():
        pytest.skip("CuPy is installed but sees no CUDA GPU")
    return cupy


def _model_and_batch(seed=0):
    from minigpt.model import GPT, GPTConfig
    config = GPTConfig(vocab_size=37, block_size=32, n_layer=2, n_head=4, n_embd=64)
    model = GPT(config, seed=seed)
    rng = np.random.default_rng(seed)
    for p in model.params.values():             # non-trivial biases and LayerNorm weights
        p += (0.05 * rng.standard_normal(p.shape)).astype(np.float32)
    idx = rng.integers(0, 37, size=(4, 32))
    targets = rng.integers(0, 37, size=(4, 32))
    return model, idx, targets


def test_cupy_forward_and_backward_equal_numpy():
    cupy = _cupy_or_skip()
    from minigpt.gradcheck import rel_error
    from minigpt.model import GPT
    model, idx, targets = _model_and_batch()
    logits, loss, cache = model.forward(idx, targets)
    grads = model.backward(cache)
    gpu = GPT(model.config, params={k: p.copy() for k, p in model.params.items()}).to("cuda")
    g_logits, g_loss, g_cache = gpu.forward(cupy.asarray(idx), cupy.asarray(targets))
    g_grads = gpu.backward(g_cache)
    assert g_logits.dtype == np.float32 and isinstance(g_logits, cupy.ndarray)
    assert rel_error(backend.to_numpy(g_logits), logits) < 1e-4
    assert abs(float(g_loss) - float(loss)) < 1e-4 * float(loss)
    errors = {k: rel_error(backend.to_numpy(g_grads[k]), grads[k]) for k in grads}
    assert max(errors.values()) < 1e-4, errors


def test_a_few_cupy_training_steps_match_numpy():
    cupy = _cupy_or_skip()
    from minigpt.model import GPT
    from minigpt.optim import AdamW, clip_grad_norm
    model, idx, targets = _model_and_batch(1)
    gpu = GPT(model.config, params={k: p.copy() for k, p in model.params.items()}).to("cuda")
    losses = {"cpu": [], "gpu": []}
    for name, m, xp in [("cpu", model, np), ("gpu", gpu, cupy)]:
        opt = AdamW(m.params, lr=1e-3)
        for _ in range(5):
            _, loss, cache = m.forward(xp.asarray(idx), xp.asarray(targets))
            grads = m.backward(cache)
            clip_grad_norm(grads, 1.0)
            opt.step(grads)
            losses[name].append(float(loss))
    np.testing.assert_allclose(losses["gpu"], losses["cpu"], rtol=1e-4)
    assert losses["cpu"][-1] < losses["cpu"][0]
    for k in model.params:
        np.testing.assert_allclose(backend.to_numpy(gpu.params[k]), model.params[k], rtol=1e-3, atol=1e-5)


def test_cupy_scatter_add_sums_repeated_indices():
    cupy = _cupy_or_skip()
    target = cupy.zeros((4, 2), dtype=cupy.float32)
    backend.scatter_add(target, cupy.asarray([1, 3, 1, 1]), cupy.arange(8, dtype=cupy.float32).reshape(4, 2))
    np.testing.assert_array_equal(backend.to_numpy(target), [[0, 0], [10, 13], [0, 0], [2, 3]])
