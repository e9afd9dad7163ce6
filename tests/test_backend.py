"""backend.py: module lookup, device errors, scatter_add, the GPU kernels' table; CuPy equality on a GPU."""
import inspect
import re
import types

import numpy as np
import pytest

from minigpt import backend, gpu_kernels, layers, optim


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


# ---------------------------------------------------------------- the GPU kernels' table (checked on the CPU)

def _names(declarations):
    return [d.split()[-1] for d in declarations.split(",")]


@pytest.mark.parametrize("name", sorted(gpu_kernels.GPU_KERNELS))
def test_each_gpu_kernel_replaces_a_row_kernel_with_the_same_parameters(name):
    params, inputs, outputs, body = gpu_kernels.GPU_KERNELS[name]
    row_kernel = getattr(layers, name, None) or getattr(optim, name)
    assert list(inspect.signature(row_kernel).parameters) == _names(params)
    assert sorted(_names(inputs) + _names(outputs)) == sorted(_names(params))   # each one passed, once


def _run_body_on_the_cpu(name, *arrays, **constants):
    """Run a GPU kernel's CUDA body through NumPy, to check its formulas without a GPU.

    The bodies keep to a C subset that maps one to one onto NumPy: `T u = e;`
    declares u, `(T)e` rounds e to the arrays' dtype, tanh and sqrt are NumPy's.
    NumPy rounds every operation as the GPU does without fused multiply-adds.
    Returns {output name: array}; the arrays given are not changed.
    """
    params, inputs, outputs, body = gpu_kernels.GPU_KERNELS[name]
    env = {n: a.copy() for n, a in zip(_names(params), arrays)}
    env.update(constants, T=arrays[0].dtype.type, tanh=np.tanh, sqrt=np.sqrt)
    env.update({k: float(v) for k, v in re.findall(r"#define (\w+) (\S+)", gpu_kernels.GPU_PREAMBLE)})
    code = re.sub(r"//.*", "", body)
    code = re.sub(r"^\s*T (\w+ =)", r"\1", code, flags=re.M)      # `T u = e;` -> `u = e;`
    code = re.sub(r"\(T\)([\w.]+|\([^()]*\))", r"T(\1)", code)    # `(T)e` -> `T(e)`
    exec("\n".join(line.strip().rstrip(";") for line in code.splitlines() if line.strip()), env)
    return {n: env[n] for n in _names(outputs)}


def _random_float32(rng, shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _adamw_data(rng, shape, decay):
    """p, g, m, v (float32) and the constants as AdamW.step computes them at step 3."""
    p, g = _random_float32(rng, shape), _random_float32(rng, shape, scale=0.1)
    m, v = _random_float32(rng, shape, scale=0.01), np.abs(_random_float32(rng, shape, scale=1e-4))
    t, b1, b2, lr = 3, 0.9, 0.99, 1e-3
    return (p, g, m, v), dict(b1=b1, b2=b2, step_size=lr / (1.0 - b1 ** t),
                              v_scale=1.0 / (1.0 - b2 ** t) ** 0.5, eps=1e-8, decay=decay)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_gelu_bodies_do_the_numpy_kernels_operations_in_the_same_order(dtype):
    rng = np.random.default_rng(3)
    dout, x = _random_float32(rng, 5000).astype(dtype), _random_float32(rng, 5000, scale=3.0).astype(dtype)
    out, dx = np.empty_like(x), np.empty_like(x)
    layers._gelu(x, out)
    layers._gelu_backward(dout, x, dx)
    np.testing.assert_array_equal(_run_body_on_the_cpu("_gelu", x, out)["out"], out)
    np.testing.assert_array_equal(_run_body_on_the_cpu("_gelu_backward", dout, x, dx)["dx"], dx)


@pytest.mark.parametrize("decay", [0.0, 1e-4])
def test_gpu_adamw_body_does_the_numpy_kernels_operations_in_the_same_order(decay):
    arrays, constants = _adamw_data(np.random.default_rng(4), 5000, decay)
    on_body = _run_body_on_the_cpu("_adamw_update", *arrays, **constants)
    p, g, m, v = arrays
    optim._adamw_update(p, g, m, v, **constants)
    for name, updated in dict(p=p, m=m, v=v).items():
        np.testing.assert_array_equal(on_body[name], updated, err_msg=name)


def test_gpu_kernel_constants_are_the_layers_constants():
    defined = dict(re.findall(r"#define (\w+) (\S+)", gpu_kernels.GPU_PREAMBLE))
    assert float(defined["GELU_SCALE"]) == layers.GELU_SCALE
    assert float(defined["GELU_CUBIC"]) == layers.GELU_CUBIC


def test_no_fused_gpu_kernels_without_cupy(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", lambda: None)
    monkeypatch.setattr(backend, "_fused_kernels", None)
    assert backend.fused_gpu_kernels() == {}


def test_fused_kernels_hand_cupy_inputs_then_outputs_whatever_the_row_kernels_order(monkeypatch):
    calls = []

    class RecordingKernel:                         # stands in for cupy.ElementwiseKernel
        def __init__(self, inputs, outputs, body, name, **options):
            self.name = name

        def __call__(self, *args):
            calls.append((self.name, args))

    monkeypatch.setattr(backend, "_cupy", lambda: types.SimpleNamespace(ElementwiseKernel=RecordingKernel))
    monkeypatch.setattr(backend, "_fused_kernels", None)
    fused = backend.fused_gpu_kernels()
    assert set(fused) == set(gpu_kernels.GPU_KERNELS)
    fused["_gelu_backward"]("dout", "x", "dx")
    fused["_adamw_update"]("p", "g", "m", "v", b1=0.9, b2=0.99, step_size=1e-3, v_scale=1.1, eps=1e-8, decay=0.0)
    assert calls == [("minigpt_gelu_backward", ("dout", "x", "dx")),
                     ("minigpt_adamw_update", ("g", 0.9, 0.99, 1e-3, 1.1, 1e-8, 0.0, "p", "m", "v"))]
    assert fused["_gelu"].__name__ == "_gelu"


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


# Both sides do the same float32 operations in the same order, but tanh differs
# in its last bits, and gelu is a difference of nearly equal terms for x << 0
# (x (1 + tanh u)) and near the zero of gelu': hence an absolute floor too.
GELU_TOLERANCE = dict(rtol=1e-5, atol=1e-6)


def test_fused_gelu_equals_the_numpy_kernel():
    cupy = _cupy_or_skip()
    x = _random_float32(np.random.default_rng(0), (300, 257), scale=3.0)
    out = np.empty_like(x)
    layers._gelu(x, out)
    g_out = cupy.empty(x.shape, dtype=cupy.float32)
    backend.fused_gpu_kernels()["_gelu"](cupy.asarray(x), g_out)
    assert g_out.dtype == np.float32
    np.testing.assert_allclose(backend.to_numpy(g_out), out, **GELU_TOLERANCE)


def test_fused_gelu_backward_equals_the_numpy_kernel():
    cupy = _cupy_or_skip()
    rng = np.random.default_rng(1)
    dout, x = _random_float32(rng, (300, 257)), _random_float32(rng, (300, 257), scale=3.0)
    dx = np.empty_like(x)
    layers._gelu_backward(dout, x, dx)
    g_dx = cupy.empty(x.shape, dtype=cupy.float32)
    backend.fused_gpu_kernels()["_gelu_backward"](cupy.asarray(dout), cupy.asarray(x), g_dx)
    assert g_dx.dtype == np.float32
    np.testing.assert_allclose(backend.to_numpy(g_dx), dx, **GELU_TOLERANCE)


@pytest.mark.parametrize("decay", [0.0, 1e-4])
def test_fused_adamw_update_equals_the_numpy_kernel(decay):
    cupy = _cupy_or_skip()
    arrays, constants = _adamw_data(np.random.default_rng(2), (129, 65), decay)
    gpu = [cupy.asarray(a) for a in arrays]
    optim._adamw_update(*arrays, **constants)
    backend.fused_gpu_kernels()["_adamw_update"](*gpu, **constants)
    for name, cpu, on_gpu in zip("pgmv", arrays, gpu):
        assert on_gpu.dtype == np.float32
        np.testing.assert_allclose(backend.to_numpy(on_gpu), cpu, rtol=1e-5, err_msg=name)


def test_parallel_rows_runs_the_fused_kernel_on_cupy_arrays(monkeypatch):
    cupy = _cupy_or_skip()
    used = []
    fused = backend.fused_gpu_kernels()["_gelu"]
    monkeypatch.setattr(backend, "fused_gpu_kernels", lambda: {"_gelu": lambda *a: used.append(1) or fused(*a)})
    out, _ = layers.gelu_forward(cupy.ones((4, 8), dtype=cupy.float32))
    assert used == [1]
    np.testing.assert_allclose(backend.to_numpy(out), 0.8411920, rtol=1e-6)   # gelu(1)
