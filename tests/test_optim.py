"""AdamW, gradient clipping and the learning-rate schedule."""
import math

import numpy as np
import pytest

from minigpt.optim import AdamW, clip_grad_norm, lr_schedule


def adamw_reference(p, grads, lr, b1, b2, eps, wd):
    """AdamW written out entry by entry from the paper, in float64."""
    m = v = 0.0
    p = p.copy()
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        p = p - lr * wd * p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def test_adamw_matches_the_written_out_update():
    rng = np.random.default_rng(0)
    w0, b0 = rng.standard_normal((4, 3)), rng.standard_normal(3)
    gw = [rng.standard_normal((4, 3)) for _ in range(5)]
    gb = [rng.standard_normal(3) for _ in range(5)]
    params = {"w": w0.copy(), "b": b0.copy()}
    opt = AdamW(params, lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for g1, g2 in zip(gw, gb):
        opt.step({"w": g1, "b": g2})
    np.testing.assert_allclose(params["w"], adamw_reference(w0, gw, 0.01, 0.9, 0.95, 1e-8, 0.1), rtol=1e-12)
    # biases (ndim 1) are not decayed
    np.testing.assert_allclose(params["b"], adamw_reference(b0, gb, 0.01, 0.9, 0.95, 1e-8, 0.0), rtol=1e-12)


def test_adamw_lr_argument_overrides_and_state_round_trips():
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal((3, 3)).astype(np.float32)}
    opt = AdamW(params, lr=1.0)
    g = {"w": rng.standard_normal((3, 3)).astype(np.float32)}
    before = params["w"].copy()
    opt.step(g, lr=1e-3)
    moved = np.abs(params["w"] - before)           # Adam's first step moves each entry ~lr
    assert 5e-4 < moved.max() < 2e-3 and opt.t == 1
    state = {"t": opt.t, "m": {k: a.copy() for k, a in opt.m.items()}, "v": {k: a.copy() for k, a in opt.v.items()}}
    copy = {"w": params["w"].copy()}
    opt2 = AdamW(copy, lr=1e-3)
    opt2.load_state_dict(state)
    opt.step(g)
    opt2.step(g, lr=1.0)
    np.testing.assert_array_equal(params["w"], copy["w"])
    assert params["w"].dtype == np.float32 and opt.m["w"].dtype == np.float32


def test_adamw_matches_torch_adamw():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((5, 4))
    grads = [rng.standard_normal((5, 4)) for _ in range(10)]
    params = {"w": w0.copy()}
    opt = AdamW(params, lr=0.02, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    tw = torch.tensor(w0, requires_grad=True)
    topt = torch.optim.AdamW([tw], lr=0.02, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for g in grads:
        opt.step({"w": g})
        tw.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(params["w"], tw.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_clip_grad_norm_returns_the_norm_before_clipping_and_scales_to_max():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm = clip_grad_norm(grads, 1.0)
    assert float(norm) == pytest.approx(5.0)
    total = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    assert total == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0], rtol=1e-5)


def test_clip_grad_norm_leaves_small_gradients_alone():
    grads = {"a": np.array([0.3, 0.4], dtype=np.float32)}
    norm = clip_grad_norm(grads, 1.0)
    assert float(norm) == pytest.approx(0.5)
    np.testing.assert_array_equal(grads["a"], np.array([0.3, 0.4], dtype=np.float32))
    assert grads["a"].dtype == np.float32


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    lrs = [lr_schedule(i, 1.0, 0.1, 10, 110) for i in range(130)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))          # rising in warm-up
    assert all(a >= b for a, b in zip(lrs[10:110], lrs[11:111]))   # falling after
    assert lrs[60] == pytest.approx(0.55)                           # half-way: the mean
    assert lrs[110] == lrs[129] == pytest.approx(0.1)
