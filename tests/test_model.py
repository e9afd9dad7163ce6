"""The whole GPT: gradients, tied head, causality, initial loss, learning, dtypes, determinism."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minigpt import layers as L
from minigpt.gradcheck import check_model, rel_error
from minigpt.model import GPT, GPTConfig, param_shapes

TINY = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)


def tiny_model(config=TINY, seed=0, jitter=0.1):
    """A float64 model with non-trivial values in every parameter (biases and LN included)."""
    model = GPT(config, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed + 1)
    for p in model.params.values():
        p += jitter * rng.standard_normal(p.shape)
    return model


def batch(config, B=2, T=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, config.vocab_size, size=(B, T)),
            rng.integers(0, config.vocab_size, size=(B, T)))


def test_params_have_gpt2_names_and_shapes():
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=12))
    C = 12
    assert model.params["wte.weight"].shape == (50, C)
    assert model.params["wpe.weight"].shape == (16, C)
    assert model.params["h.1.attn.c_attn.weight"].shape == (C, 3 * C)
    assert model.params["h.1.attn.c_proj.weight"].shape == (C, C)
    assert model.params["h.0.mlp.c_fc.weight"].shape == (C, 4 * C)
    assert model.params["h.0.mlp.c_proj.weight"].shape == (4 * C, C)
    assert model.params["ln_f.bias"].shape == (C,)
    assert len(model.params) == 2 + 12 * 2 + 2
    assert not any("lm_head" in k for k in model.params)


@pytest.mark.parametrize("bias", [True, False])
def test_every_parameter_gradient_matches_numerical_gradient(bias):
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, bias=bias)
    model = tiny_model(config)
    idx, targets = batch(config)
    errors = check_model(model, idx, targets, per_param=8)
    assert set(errors) == set(model.params)
    bad = {k: e for k, e in errors.items() if e >= 1e-6}
    assert not bad, bad


def test_backward_returns_exactly_the_parameter_keys_and_shapes():
    model = tiny_model()
    _, _, cache = model.forward(*batch(TINY))
    grads = model.backward(cache)
    assert list(grads) == list(model.params)
    for k in grads:
        assert grads[k].shape == model.params[k].shape, k


def test_tied_embedding_gradient_is_sum_of_embedding_and_head_paths():
    model = tiny_model()
    idx, targets = batch(TINY)
    _, _, cache = model.forward(idx, targets)
    grads = model.backward(cache)
    # The head's share: logits = x_final @ wte^T  ->  dwte = dlogits^T x_final.
    c_emb, c_drop, *c_blocks, c_lnf, x_final, c_ce = cache
    dlogits = L.cross_entropy_backward(1.0, c_ce).reshape(-1, TINY.vocab_size)
    head = dlogits.T @ x_final.reshape(-1, TINY.n_embd)
    # The embedding's share: everything below the head, with the head's use of wte frozen.
    wte_frozen = model.params["wte.weight"].copy()
    emb_part = np.zeros_like(wte_frozen)
    h = 1e-6
    for i in np.unique(idx):                         # only rows that are looked up can differ
        for j in range(TINY.n_embd):
            def loss_with(delta):
                P = dict(model.params)
                w = wte_frozen.copy()
                w[i, j] += delta
                P["wte.weight"] = w
                x, _ = L.embedding_forward(idx, w, P["wpe.weight"])
                for b in range(TINY.n_layer):
                    model.params, saved = P, model.params
                    x, _ = model._block_forward(b, x, 0.0, None)
                    model.params = saved
                x, _ = L.layernorm_forward(x, P["ln_f.weight"], P["ln_f.bias"])
                logits = x @ wte_frozen.T
                return float(L.cross_entropy_forward(logits, targets)[0])
            emb_part[i, j] = (loss_with(h) - loss_with(-h)) / (2 * h)
    assert rel_error(grads["wte.weight"], emb_part + head) < 1e-6
    assert rel_error(head, 0) > 0.5 and rel_error(emb_part, 0) > 0.5   # both paths matter


@given(T=st.integers(2, 8), t=st.integers(0, 6), seed=st.integers(0, 2**31))
def test_future_tokens_never_change_past_logits(T, t, seed):
    t = t % (T - 1)                                  # change positions t+1 .. T-1
    model = GPT(TINY, seed=seed % 1000, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, TINY.vocab_size, size=(2, T))
    changed = idx.copy()
    changed[:, t + 1:] = rng.integers(0, TINY.vocab_size, size=(2, T - t - 1))
    a, _, _ = model.forward(idx)
    b, _, _ = model.forward(changed)
    np.testing.assert_array_equal(a[:, :t + 1], b[:, :t + 1])


def test_initial_loss_is_close_to_log_vocab_size():
    config = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=64)
    model = GPT(config, seed=0)
    idx, targets = batch(config, B=8, T=32)
    _, loss, _ = model.forward(idx, targets)
    assert abs(float(loss) - math.log(65)) < 0.1


def test_adamw_drives_loss_on_one_batch_below_a_tenth():
    from minigpt.optim import AdamW
    config = GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config, seed=0)
    idx, targets = batch(config, B=4, T=16)
    opt = AdamW(model.params, lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(100):
        _, loss, cache = model.forward(idx, targets, train=True)
        first = float(loss) if first is None else first
        opt.step(model.backward(cache))
    assert float(loss) < 0.1 * first, (first, float(loss))


def test_float32_in_float32_out_everywhere():
    config = GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.1)
    model = GPT(config, seed=0)
    assert all(p.dtype == np.float32 for p in model.params.values())
    idx, targets = batch(config)
    logits, loss, cache = model.forward(idx, targets, train=True, rng=np.random.default_rng(0))
    assert logits.dtype == np.float32 and loss.dtype == np.float32
    grads = model.backward(cache)
    assert all(g.dtype == np.float32 for g in grads.values())


def test_same_seed_gives_same_parameters_and_loss():
    config = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.2)
    runs = []
    for _ in range(2):
        model = GPT(config, seed=7)
        idx, targets = batch(config)
        _, loss, _ = model.forward(idx, targets, train=True, rng=np.random.default_rng(3))
        runs.append((model.params, float(loss)))
    assert runs[0][1] == runs[1][1]
    for k in runs[0][0]:
        np.testing.assert_array_equal(runs[0][0][k], runs[1][0][k])
    other = GPT(config, seed=8)
    assert not np.array_equal(other.params["wte.weight"], runs[0][0]["wte.weight"])


def test_initialisation_follows_gpt2():
    config = GPTConfig(vocab_size=300, block_size=64, n_layer=4, n_head=4, n_embd=128)
    P = GPT(config, seed=0).params
    assert abs(P["wte.weight"].std() - 0.02) < 0.001
    assert abs(P["h.0.attn.c_attn.weight"].std() - 0.02) < 0.001
    scaled = 0.02 / math.sqrt(2 * config.n_layer)
    assert abs(P["h.0.mlp.c_proj.weight"].std() - scaled) < 0.001
    assert abs(P["h.3.attn.c_proj.weight"].std() - scaled) < 0.001
    assert not P["h.0.mlp.c_fc.bias"].any() and (P["h.2.ln_1.weight"] == 1).all()


def test_config_rejects_heads_that_do_not_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)


def test_sequence_longer_than_block_size_is_refused():
    model = GPT(TINY)
    with pytest.raises(ValueError, match="block_size"):
        model.forward(np.zeros((1, TINY.block_size + 1), dtype=np.int64))


def test_param_count_matches_gpt2_small_formula():
    config = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    n = sum(math.prod(s) for s in param_shapes(config).values())
    assert n == 124_439_808                           # GPT-2 124M, tied head counted once


def test_residual_stream_is_the_embeddings_first_and_what_ln_f_reads_last():
    model = tiny_model()
    idx, _ = batch(TINY)
    logits, _, caches = model.forward(idx)
    P = model.params
    first = model.residual_stream(caches, 0)
    np.testing.assert_allclose(first, P["wte.weight"][idx] + P["wpe.weight"][:idx.shape[1]], rtol=1e-12)
    last = model.residual_stream(caches, TINY.n_layer)
    xn = (last - last.mean(-1, keepdims=True)) / np.sqrt(last.var(-1, keepdims=True) + 1e-5)
    xn = xn * P["ln_f.weight"] + P["ln_f.bias"]
    np.testing.assert_allclose(xn @ P["wte.weight"].T, logits, rtol=1e-9, atol=1e-12)
    assert not np.allclose(model.residual_stream(caches, 1), first)     # block 0 added something
    with pytest.raises(IndexError):
        model.residual_stream(caches, TINY.n_layer + 1)


def test_attention_weights_of_block_i_are_the_causal_softmax_of_its_queries_and_keys():
    model = tiny_model()
    idx, _ = batch(TINY)
    _, _, caches = model.forward(idx)
    P, C, nh = model.params, TINY.n_embd, TINY.n_head
    for i in range(TINY.n_layer):
        x = model.residual_stream(caches, i)
        a = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
        a = a * P[f"h.{i}.ln_1.weight"] + P[f"h.{i}.ln_1.bias"]
        qkv = a @ P[f"h.{i}.attn.c_attn.weight"] + P[f"h.{i}.attn.c_attn.bias"]
        B, T, _ = qkv.shape
        q, k = (qkv[..., j * C:(j + 1) * C].reshape(B, T, nh, -1).transpose(0, 2, 1, 3) for j in (0, 1))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(C // nh) + np.triu(np.full((T, T), -np.inf), 1)
        expected = np.exp(s - s.max(-1, keepdims=True))
        expected /= expected.sum(-1, keepdims=True)
        np.testing.assert_allclose(model.attention_weights(caches, i), expected, rtol=1e-9, atol=1e-15)
    with pytest.raises(IndexError):
        model.attention_weights(caches, TINY.n_layer)


# ------------------------------------------------------------ ids outside the vocabulary

@pytest.mark.parametrize("bad", [-1, -2, 10, 99])
def test_an_input_id_outside_the_vocabulary_is_a_value_error(bad):
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match=f"token id {bad} is outside"):
        model.forward(np.array([[bad, 2, 3]]))


@pytest.mark.parametrize("bad", [-2, 10])
def test_a_target_outside_the_vocabulary_is_a_value_error_and_only_minus_one_is_ignored(bad):
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    idx = np.array([[1, 2, 3]])
    with pytest.raises(ValueError, match=f"target {bad} is outside"):
        model.forward(idx, np.array([[bad, 2, 3]]))
    logits, ignored, _ = model.forward(idx, np.array([[-1, 2, 3]]))
    logp = logits[0] - np.log(np.exp(logits[0]).sum(-1, keepdims=True))
    assert np.isclose(float(ignored), -(logp[1, 2] + logp[2, 3]) / 2, rtol=1e-5)


def test_float_ids_are_a_value_error():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match="integer"):
        model.forward(np.array([[1.0, 2.0]]))


@pytest.mark.parametrize("shape", [(3,), (0, 4), (2, 0)])
def test_forward_on_ids_that_are_not_a_non_empty_batch_is_a_value_error(shape):
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(ValueError, match=r"idx must be \(B, T\) integer ids, got shape"):
        model.forward(np.zeros(shape, dtype=np.int64))
