"""The gradient checker itself: it passes correct backward passes and catches wrong ones."""
import numpy as np
import pytest

from minigpt import gradcheck, layers as L


def test_gradcheck_cli_reports_every_layer_and_exits_zero(capsys):
    assert gradcheck.main([]) == 0
    out = capsys.readouterr().out
    for layer in ["embedding", "linear", "layernorm", "gelu", "dropout", "attention", "cross_entropy", "model"]:
        assert f"\n{layer} " in out
    assert "0 FAIL" in out and "wte.weight" in out and "h.1.mlp.c_proj.weight" in out


def test_gradcheck_catches_a_wrong_backward():
    def wrong_gelu_backward(dout, x):
        return dout * 0.5 * (1.0 + np.tanh(x))        # a plausible-looking mistake
    x = np.random.default_rng(0).standard_normal((3, 4))
    errs = gradcheck.check_layer(L.gelu_forward, wrong_gelu_backward, [x])
    assert errs["input0"] > 1e-3


def test_cli_exits_one_when_a_layer_is_wrong(monkeypatch, capsys):
    monkeypatch.setattr(L, "gelu_backward", lambda dout, x: dout)  # identity: wrong
    assert gradcheck.main([]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_numerical_gradient_of_a_known_function():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    dout = np.array([[1.0, 2.0], [-1.0, 0.5]])
    num = gradcheck.numerical_gradient(lambda: x**3, x, dout)
    np.testing.assert_allclose(num, 3 * x**2 * dout, rtol=1e-8)


def test_rel_error_is_zero_for_equal_and_large_for_different_arrays():
    a = np.array([1.0, 2.0, 0.0])
    assert gradcheck.rel_error(a, a) == 0.0
    assert gradcheck.rel_error(a, -a) == 2.0
    assert gradcheck.rel_error(np.zeros(3), np.zeros(3)) == 0.0


def test_check_layer_passes_a_correct_backward_that_scales_dout_in_place():
    def gelu_backward_in_place(dout, x):              # correct, but reuses dout's memory
        dout *= L.gelu_backward(np.ones_like(x), x)
        return dout
    x = np.random.default_rng(0).standard_normal((3, 4))
    errs = gradcheck.check_layer(L.gelu_forward, gelu_backward_in_place, [x])
    assert errs["input0"] < 1e-8, errs


def test_check_layer_dout_is_not_the_callers_stream():
    # inputs drawn with default_rng(0), as a caller's often are; w = 1, b = 0. When dout came
    # from default_rng(0) too it equalled x, the true dx nearly vanished and minigpt's own
    # LayerNorm "failed" on finite-difference noise.
    x = np.random.default_rng(0).standard_normal((2, 5, 8))
    errs = gradcheck.check_layer(L.layernorm_forward, L.layernorm_backward, [x, np.ones(8), np.zeros(8)],
                                 ["x", "w", "b"], seed=0)
    assert max(errs.values()) < 1e-7, errs


def test_check_layer_refuses_a_wrong_number_of_gradients():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))

    def ignores_the_bias_flag(dy, cache):              # returns a db for a layer without bias
        dx, dw, _ = L.linear_backward(dy, cache)
        return dx, dw, dy.sum(axis=0)
    forward = lambda x, w: L.linear_forward(x, w, None)  # noqa: E731
    with pytest.raises(ValueError, match="returned 3 gradients for 2 inputs"):
        gradcheck.check_layer(forward, ignores_the_bias_flag, [x, w])
    with pytest.raises(ValueError, match="returned 1 gradients for 2 inputs"):
        gradcheck.check_layer(forward, lambda dy, cache: L.linear_backward(dy, cache)[0], [x, w])
    # minigpt's own linear_backward returns db = None without a bias: accepted
    assert set(gradcheck.check_layer(forward, L.linear_backward, [x, w])) == {"input0", "input1"}
