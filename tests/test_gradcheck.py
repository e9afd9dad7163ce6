"""The gradient checker itself: it passes correct backward passes and catches wrong ones."""
import numpy as np

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
