"""The speed paths change nothing but the speed.

`backend.parallel_rows` cuts arrays into row blocks and shares them over
threads, and `mallopt` recycles freed memory. These tests force tiny blocks
(so the small shapes of a test are cut into many ragged blocks) and prove that
the blocked elementwise and row-wise kernels give what one plain call gives
(the same bits for elementwise math; to rounding where a kernel's row
reductions go through BLAS, whose vector kernels may group a short block's
sums differently), that gradients through the blocked paths still match finite
differences, that float32 stays float32, and that nothing a step returns is
overwritten by the next.
"""
import numpy as np
import pytest

from minigpt import backend, layers as L
from minigpt.gradcheck import check_layer, layer_cases
from minigpt.model import GPT, GPTConfig
from minigpt.optim import AdamW


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Split every array of 2+ rows into small blocks over 2 threads."""
    monkeypatch.setattr(backend, "MIN_PARALLEL_ELEMENTS", 1)
    monkeypatch.setattr(backend, "BLOCK_ELEMENTS", 7)
    old = backend.host_threads(2)
    yield
    backend.host_threads(old)


def run_every_layer(dtype, seed=0):
    """Forward and backward of every layer on fixed inputs; returns {name: array}."""
    rng = np.random.default_rng(seed)
    B, T, C, nh, V = 3, 7, 12, 3, 29

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)
    out = {}
    y, c = L.layernorm_forward(r(B, T, C), r(C), r(C))
    out["ln"], (out["ln dx"], out["ln dw"], out["ln db"]) = y, L.layernorm_backward(r(B, T, C), c)
    y, c = L.gelu_forward(r(B, T, 4 * C))
    out["gelu"], out["gelu dx"] = y, L.gelu_backward(r(B, T, 4 * C), c)
    y, c = L.attention_forward(r(B, T, 3 * C), nh)
    out["attn"], out["attn dqkv"] = y, L.attention_backward(r(B, T, C), c)
    y, c = L.attention_forward(r(B, T, 3 * C), nh, 0.3, np.random.default_rng(1))
    out["attn drop"], out["attn drop dqkv"] = y, L.attention_backward(r(B, T, C), c)
    targets = rng.integers(-1, V, size=(B, T))
    loss, c = L.cross_entropy_forward(r(B, T, V) * 3, targets)
    out["ce"], out["ce dlogits"] = loss, L.cross_entropy_backward(1.0, c)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_threaded_layers_equal_one_call(dtype, monkeypatch):
    tol = 1e-6 if dtype == np.float32 else 1e-14
    monkeypatch.setattr(backend, "MIN_PARALLEL_ELEMENTS", 1 << 60)
    plain = run_every_layer(dtype)
    monkeypatch.setattr(backend, "MIN_PARALLEL_ELEMENTS", 1)
    for block in (1, 7, 100):
        monkeypatch.setattr(backend, "BLOCK_ELEMENTS", block)
        for threads in (1, 2, 3):
            old = backend.host_threads(threads)
            try:
                blocked = run_every_layer(dtype)
            finally:
                backend.host_threads(old)
            for name in plain:
                assert blocked[name].dtype == dtype, name
                np.testing.assert_allclose(blocked[name], plain[name], rtol=tol, atol=tol,
                                           err_msg=f"{name}, block {block}")


def test_gradients_through_tiny_blocks_match_finite_differences(tiny_blocks):
    rng = np.random.default_rng(0)
    for name, fwd, bwd, inputs, names in layer_cases(rng):
        errors = check_layer(fwd, bwd, inputs, names)
        assert max(errors.values()) < 1e-6, (name, errors)


def test_adamw_blocked_over_threads_equals_one_call(monkeypatch):
    rng = np.random.default_rng(0)
    shapes = {"w": (37, 5), "b": (11,), "e": (3, 4)}
    start = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(4)]
    results = []
    for min_parallel, threads in ((1 << 60, 1), (1, 2)):
        monkeypatch.setattr(backend, "MIN_PARALLEL_ELEMENTS", min_parallel)
        monkeypatch.setattr(backend, "BLOCK_ELEMENTS", 6)
        old = backend.host_threads(threads)
        params = {k: a.copy() for k, a in start.items()}
        opt = AdamW(params, lr=1e-2)
        for g in grads:
            opt.step(g)
        backend.host_threads(old)
        results.append((params, opt.m, opt.v))
    (p1, m1, v1), (p2, m2, v2) = results
    for k in shapes:
        np.testing.assert_array_equal(p1[k], p2[k])
        np.testing.assert_array_equal(m1[k], m2[k])
        np.testing.assert_array_equal(v1[k], v2[k])
        assert p2[k].dtype == np.float32


def train(steps, dtype=np.float64, dropout=0.0):
    config = GPTConfig(vocab_size=23, block_size=9, n_layer=2, n_head=3, n_embd=12, dropout=dropout)
    model = GPT(config, seed=0, dtype=dtype)
    opt = AdamW(model.params, lr=1e-2)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 23, size=(3, 9))
    targets = rng.integers(0, 23, size=(3, 9))
    losses = []
    for i in range(steps):
        _, loss, cache = model.forward(idx, targets, train=True, rng=np.random.default_rng(i))
        opt.step(model.backward(cache))
        losses.append(float(loss))
    return losses, model.params


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_training_steps_on_tiny_threaded_blocks_equal_the_plain_path(dropout, monkeypatch):
    """To rounding: the blocks change who computes each row, and BLAS's grouping of row sums."""
    monkeypatch.setattr(backend, "MIN_PARALLEL_ELEMENTS", 1 << 60)
    plain_losses, plain_params = train(4, dropout=dropout)
    monkeypatch.setattr(backend, "MIN_PARALLEL_ELEMENTS", 1)
    monkeypatch.setattr(backend, "BLOCK_ELEMENTS", 5)
    old = backend.host_threads(2)
    try:
        losses, params = train(4, dropout=dropout)
    finally:
        backend.host_threads(old)
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-13)
    for k in params:
        np.testing.assert_allclose(params[k], plain_params[k], rtol=1e-10, atol=1e-13, err_msg=k)


def test_float32_model_on_the_threaded_path_stays_float32(tiny_blocks):
    losses, params = train(2, dtype=np.float32, dropout=0.1)
    assert all(p.dtype == np.float32 for p in params.values())
    assert losses[1] < losses[0]


def test_nothing_returned_by_a_step_is_overwritten_by_the_next():
    """Freed memory is recycled (mallopt), but never memory still referenced."""
    config = GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=64)
    model = GPT(config, seed=0)
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 50, size=(8, 32)), rng.integers(0, 50, size=(8, 32))) for _ in range(2)]
    logits, loss, cache = model.forward(*batches[0])
    grads = model.backward(cache)
    kept = (logits.copy(), float(loss), {k: g.copy() for k, g in grads.items()})
    for _ in range(2):                                 # more steps on other data
        _, _, c = model.forward(*batches[1])
        model.backward(c)
    np.testing.assert_array_equal(logits, kept[0])
    assert float(loss) == kept[1]
    for k in grads:
        np.testing.assert_array_equal(grads[k], kept[2][k])


def test_a_worker_exception_reaches_the_caller(tiny_blocks):
    def kernel(x):
        if x[0] >= 50:                                 # some blocks fail, whichever thread runs them
            raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        backend.parallel_rows(kernel, np.arange(100.0))


def test_every_row_is_handed_out_exactly_once(tiny_blocks):
    for n in (2, 3, 7, 64, 101):
        seen = np.zeros(n)

        def kernel(rows, seen):
            seen += 1.0
        backend.parallel_rows(kernel, np.zeros((n, 3)), seen)
        assert (seen == 1).all(), n


def test_scatter_add_by_sorting_equals_np_add_at():
    """Equal to rounding (the sums run in another order), repeated indices included."""
    rng = np.random.default_rng(0)
    for V, N in ((5, 200), (1000, 50), (3, 1)):
        idx = rng.integers(0, V, size=N)
        values = rng.standard_normal((N, 4)).astype(np.float32)
        for start in (np.zeros((V, 4), np.float32), rng.standard_normal((V, 4)).astype(np.float32)):
            expected = start.copy()
            np.add.at(expected, idx, values)
            got = backend.scatter_add(start.copy(), idx, values)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    empty = np.ones((3, 2))
    backend.scatter_add(empty, np.zeros(0, dtype=int), np.zeros((0, 2)))
    assert (empty == 1).all()


def test_flops_per_token_is_six_n_plus_the_attention_term():
    from minigpt.flops import flops_per_token, matmul_params, measure_matmul_peak
    gpt2 = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    assert matmul_params(gpt2) == 124_439_808 - 1024 * 768          # all but wpe
    assert flops_per_token(gpt2) == 6 * 123_653_376 + 12 * 12 * 768 * 1024
    assert flops_per_token(gpt2, T=256) == 6 * 123_653_376 + 12 * 12 * 768 * 256
    peak = measure_matmul_peak(seconds=0.01, n=64)
    assert isinstance(peak, float) and peak > 0


@pytest.mark.parametrize("first", ["minigpt", "numpy"])
@pytest.mark.parametrize("preset", [None, "30"])
def test_importing_minigpt_lowers_openblas_spin_unless_the_user_chose(preset, first):
    """OpenBLAS takes minigpt's OPENBLAS_THREAD_TIMEOUT whichever of NumPy and minigpt comes first."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    code = (f"import ctypes, os, {first}, numpy, minigpt, minigpt.openblas as o\n"
            "numpy.ones((300, 300)) @ numpy.ones((300, 300))\n"
            "get = [getattr(lib, 'openblas_thread_timeout', None) for lib in o.LIBS]\n"
            "get = [f for f in get if f is not None]\n"
            "if get: get[0].restype = ctypes.c_int\n"
            "print(os.environ['OPENBLAS_THREAD_TIMEOUT'], get[0]() if get else 'no-getter')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    value, seen_by_openblas = out.stdout.split()
    assert value == (preset or "4")
    if seen_by_openblas != "no-getter":            # the value OpenBLAS's threads run with
        assert seen_by_openblas == value
