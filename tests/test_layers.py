"""Each layer's backward equals centred differences (float64), and dtypes are kept."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minigpt import layers as L
from minigpt.gradcheck import check_layer, rel_error

TOL = 1e-6

dims = st.integers(1, 4)


def rand(rng, *shape):
    return rng.standard_normal(shape)


@given(B=dims, T=st.integers(1, 6), C=st.integers(1, 6), V=st.integers(2, 9), seed=st.integers(0, 2**31))
def test_embedding_backward_matches_numerical_gradient(B, T, C, V, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, V, size=(B, T))
    errs = check_layer(lambda wte, wpe: L.embedding_forward(idx, wte, wpe), L.embedding_backward,
                       [rand(rng, V, C), rand(rng, T + 3, C)], seed=seed)
    assert max(errs.values()) < TOL, errs


def test_embedding_backward_sums_repeated_tokens():
    wte, wpe = np.zeros((3, 2)), np.zeros((4, 2))
    idx = np.array([[1, 1, 1]])
    _, cache = L.embedding_forward(idx, wte, wpe)
    dwte, dwpe = L.embedding_backward(np.ones((1, 3, 2)), cache)
    assert dwte[1].tolist() == [3.0, 3.0] and dwte[0].tolist() == [0.0, 0.0]
    assert dwpe[:3].tolist() == [[1.0, 1.0]] * 3 and dwpe[3].tolist() == [0.0, 0.0]


@given(B=dims, T=st.integers(1, 5), Cin=st.integers(1, 7), Cout=st.integers(1, 7),
       bias=st.booleans(), seed=st.integers(0, 2**31))
def test_linear_backward_matches_numerical_gradient(B, T, Cin, Cout, bias, seed):
    rng = np.random.default_rng(seed)
    b = rand(rng, Cout) if bias else None
    inputs = [rand(rng, B, T, Cin), rand(rng, Cin, Cout)] + ([b] if bias else [])
    fwd = (lambda x, w, b: L.linear_forward(x, w, b)) if bias else (lambda x, w: L.linear_forward(x, w, None))
    errs = check_layer(fwd, L.linear_backward, inputs, seed=seed)
    assert len(errs) == len(inputs) and max(errs.values()) < TOL, errs


@given(B=dims, T=st.integers(1, 5), C=st.integers(3, 9), seed=st.integers(0, 2**31))
def test_layernorm_backward_matches_numerical_gradient(B, T, C, seed):
    rng = np.random.default_rng(seed)
    # Non-zero means and varied scales. (With C = 2 the normalised output is always
    # about +-1, its gradient is pure rounding noise, and no check is meaningful.)
    x = rand(rng, B, T, C) * 3.0 + rand(rng, B, T, 1)
    errs = check_layer(L.layernorm_forward, L.layernorm_backward, [x, rand(rng, C), rand(rng, C)], seed=seed)
    assert max(errs.values()) < TOL, errs


def test_layernorm_output_has_zero_mean_unit_variance():
    x = np.random.default_rng(0).standard_normal((3, 7, 16)) * 5 + 2
    out, _ = L.layernorm_forward(x, np.ones(16), np.zeros(16))
    assert np.allclose(out.mean(-1), 0, atol=1e-12)
    assert np.allclose(out.var(-1), 1, atol=1e-4)           # eps = 1e-5 shaves a little


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), seed=st.integers(0, 2**31))
def test_gelu_backward_matches_numerical_gradient(shape, seed):
    rng = np.random.default_rng(seed)
    # Standard-normal inputs: far in the negative tail 1 + tanh(u) cancels to a few
    # digits, and the forward itself is too coarse for finite differences there.
    errs = check_layer(L.gelu_forward, L.gelu_backward, [rand(rng, *shape)], seed=seed)
    assert errs["input0"] < TOL, errs


def test_gelu_is_the_tanh_approximation():
    x = np.linspace(-5, 5, 101)
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    assert np.allclose(L.gelu_forward(x)[0], expected, rtol=1e-12, atol=1e-15)


@given(p=st.sampled_from([0.1, 0.5, 0.9]), seed=st.integers(0, 2**31))
def test_dropout_backward_matches_numerical_gradient(p, seed):
    rng = np.random.default_rng(seed)

    def fwd(x):
        return L.dropout_forward(x, p, np.random.default_rng(seed))
    errs = check_layer(fwd, L.dropout_backward, [rand(rng, 3, 4, 5)], seed=seed)
    assert errs["input0"] < TOL


def test_dropout_keeps_expectation_and_is_identity_at_zero():
    x = np.ones((200, 500), dtype=np.float32)
    out, _ = L.dropout_forward(x, 0.3, np.random.default_rng(0))
    assert abs(out.mean() - 1.0) < 0.01
    assert np.isclose((out == 0).mean(), 0.3, atol=0.01)
    same, cache = L.dropout_forward(x, 0.0, np.random.default_rng(0))
    assert same is x and cache is None


@given(B=dims, T=st.integers(1, 6), nh=st.integers(1, 3), hs=st.integers(1, 4),
       p=st.sampled_from([0.0, 0.25]), seed=st.integers(0, 2**31))
def test_attention_backward_matches_numerical_gradient(B, T, nh, hs, p, seed):
    rng = np.random.default_rng(seed)
    C = nh * hs

    def fwd(qkv):
        return L.attention_forward(qkv, nh, p, np.random.default_rng(seed))
    errs = check_layer(fwd, L.attention_backward, [rand(rng, B, T, 3 * C)], seed=seed)
    assert errs["input0"] < TOL, errs


def attention_by_loops(qkv, n_head):
    """The textbook formula, one batch row, head and query position at a time."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    y = np.zeros((B, T, C))
    for b in range(B):
        for h in range(n_head):
            sl = slice(h * hs, (h + 1) * hs)
            for t in range(T):
                scores = np.array([q[b, t, sl] @ k[b, s, sl] / np.sqrt(hs) for s in range(t + 1)])
                w = np.exp(scores - scores.max())
                w /= w.sum()
                y[b, t, sl] = sum(w[s] * v[b, s, sl] for s in range(t + 1))
    return y


@given(B=dims, T=st.integers(1, 6), nh=st.integers(1, 3), hs=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_attention_equals_the_loop_formula(B, T, nh, hs, seed):
    qkv = np.random.default_rng(seed).standard_normal((B, T, 3 * nh * hs))
    y, _ = L.attention_forward(qkv, nh)
    assert rel_error(y, attention_by_loops(qkv, nh)) < 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1.0, 8.0, 30.0, 1e3])
def test_attention_with_large_scores_equals_the_loop_formula_without_a_warning(scale, dtype):
    # Scores far apart (scale 30 and up: exp of them alone overflows) must still give the
    # softmax, with no overflow warning reaching the user.
    qkv = (scale * np.random.default_rng(5).standard_normal((2, 9, 3 * 12))).astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # no warning reaches the user
        y, cache = L.attention_forward(qkv, 3)
    att = cache[3]
    assert np.isfinite(y).all() and y.dtype == dtype
    np.testing.assert_allclose(att.sum(axis=-1), 1.0, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert rel_error(y, attention_by_loops(qkv.astype(np.float64), 3)) < (1e-4 if dtype == np.float32 else 1e-12)


@given(B=dims, T=st.integers(1, 6), V=st.integers(2, 12), seed=st.integers(0, 2**31))
def test_cross_entropy_backward_matches_numerical_gradient(B, T, V, seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(-1, V, size=(B, T))                # -1 = ignored
    targets.flat[0] = 0                                       # at least one counted
    errs = check_layer(lambda z: L.cross_entropy_forward(z, targets), L.cross_entropy_backward,
                       [rand(rng, B, T, V) * 3.0], seed=seed)
    assert errs["input0"] < TOL, errs


def test_cross_entropy_ignores_padded_targets_and_means_over_the_rest():
    logits = np.random.default_rng(1).standard_normal((1, 4, 5))
    targets = np.array([[2, -1, 4, -1]])
    loss, _ = L.cross_entropy_forward(logits, targets)
    logp = logits[0] - np.log(np.exp(logits[0]).sum(-1, keepdims=True))
    assert np.isclose(loss, -(logp[0, 2] + logp[2, 4]) / 2, rtol=1e-12)


def test_cross_entropy_of_uniform_logits_is_log_V():
    loss, _ = L.cross_entropy_forward(np.zeros((2, 3, 50)), np.zeros((2, 3), dtype=int))
    assert np.isclose(loss, np.log(50))


def layer_outputs(dtype):
    """Run every layer's forward and backward at one dtype; yield (name, array)."""
    rng = np.random.default_rng(0)
    B, T, C, nh, V = 2, 4, 8, 2, 7

    def r(*s):
        return rng.standard_normal(s).astype(dtype)
    idx = rng.integers(0, V, size=(B, T))
    x, c = L.embedding_forward(idx, r(V, C), r(T, C))
    yield "embedding", x
    yield from zip(["embedding dwte", "embedding dwpe"], L.embedding_backward(x, c))
    for name, (fwd, args) in {
            "linear": (L.linear_forward, (r(B, T, C), r(C, 3 * C), r(3 * C))),
            "layernorm": (L.layernorm_forward, (r(B, T, C), r(C), r(C))),
            "gelu": (L.gelu_forward, (r(B, T, C),)),
            "dropout": (lambda x: L.dropout_forward(x, 0.5, np.random.default_rng(0)), (r(B, T, C),)),
            "attention": (lambda qkv: L.attention_forward(qkv, nh, 0.1, np.random.default_rng(0)),
                          (r(B, T, 3 * C),)),
    }.items():
        out, cache = fwd(*args)
        yield name, out
        bwd = getattr(L, (name if name != "dropout" else "dropout") + "_backward")
        grads = bwd(r(*out.shape), cache)
        for i, g in enumerate(grads if isinstance(grads, tuple) else (grads,)):
            yield f"{name} grad {i}", g
    loss, cache = L.cross_entropy_forward(r(B, T, V), rng.integers(0, V, size=(B, T)))
    yield "cross_entropy loss", loss
    yield "cross_entropy grad", L.cross_entropy_backward(1.0, cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layer_keeps_its_input_dtype(dtype):
    for name, arr in layer_outputs(dtype):
        assert arr.dtype == dtype, f"{name} returned {arr.dtype} for {np.dtype(dtype)} input"
