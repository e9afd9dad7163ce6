"""Numerical gradients, for the tests and for students checking their own backward passes.

    from minigpt import layers, gradcheck
    x = np.random.randn(4, 8)
    out, cache = layers.gelu_forward(x)
    dout = np.random.randn(*out.shape)
    dx = layers.gelu_backward(dout, cache)
    num = gradcheck.numerical_gradient(lambda: layers.gelu_forward(x)[0], x, dout)
    print(gradcheck.rel_error(dx, num))     # ~1e-10 in float64

`python -m minigpt.gradcheck` checks every layer and a whole model in float64
and prints a table; it exits with status 1 if any error is above 1e-6.
"""

if __name__ == "__main__" and not __package__:    # `python minigpt/gradcheck.py`: run it as a module
    import os, runpy, sys                           # noqa: E401 (before any relative import)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("minigpt.gradcheck", run_name="__main__", alter_sys=True)
    sys.exit(0)

import argparse
import sys

import numpy as np

TOLERANCE = 1e-6


def rel_error(a, b):
    """Max relative error between two arrays: max|a - b| / max(max|a|, max|b|).

    Measured against the arrays' scale rather than entry by entry, because an
    entry that happens to be near zero would make an entry-wise ratio blow up
    from finite-difference noise alone. A wrong backward gives errors near 1.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-300)
    return float(np.abs(a - b).max(initial=0.0) / scale)


def numerical_gradient(f, x, dout, h=1e-5):
    """Centred-difference gradient of sum(f() * dout) with respect to array x.

    f: a function of no arguments that reads x (changed in place here) and
    returns an array shaped like dout. Returns an array shaped like x:
    (f(x + h) - f(x - h)) . dout / 2h, entry by entry. This is the gradient
    a backward pass should return when dout is its upstream gradient.
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = np.sum(f() * dout)
        x[i] = old - h
        minus = np.sum(f() * dout)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def numerical_gradient_scalar(f, x, h=1e-5, indices=None):
    """Centred-difference gradient of a scalar function f() with respect to x.

    indices: optional list of index tuples to check (the rest stay 0), for
    large arrays such as a model's weights. Returns an array shaped like x.
    """
    grad = np.zeros_like(x)
    if indices is None:
        indices = list(np.ndindex(x.shape))
    for i in indices:
        old = x[i]
        x[i] = old + h
        plus = float(f())
        x[i] = old - h
        minus = float(f())
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


DOUT_STREAM = 0x5EED_D0D7     # check_layer's upstream gradient: a random stream of its own


def check_layer(forward, backward, inputs, names=None, seed=0):
    """Check a layer pair against centred differences, for every input.

    forward(*inputs) -> (out, cache); backward(dout, cache) -> gradients in
    the order of the inputs (None where an input has no gradient).
    Returns {name: max relative error} for each input that has a gradient.

    The upstream gradient `dout` comes from its own stream, seeded by `seed`
    (so never equal to inputs drawn with `default_rng(seed)`), and the backward
    gets a copy of it: a backward that scales `dout` in place is judged on its
    gradient. A backward that returns fewer gradients than there are inputs, or
    more (other than trailing Nones for inputs fixed to None, as a linear layer
    called without a bias returns db = None), raises ValueError.
    """
    rng = np.random.default_rng([seed, DOUT_STREAM])
    out, cache = forward(*inputs)
    dout = rng.standard_normal(np.shape(out))
    grads = backward(dout.copy(), cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    extra = grads[len(inputs):]
    if len(grads) < len(inputs) or any(g is not None for g in extra):
        raise ValueError(f"backward returned {len(grads)} gradients for {len(inputs)} inputs")
    names = names or [f"input{i}" for i in range(len(inputs))]
    errors = {}
    for name, x, g in zip(names, inputs, grads):
        if g is None:
            continue
        num = numerical_gradient(lambda: forward(*inputs)[0], x, dout)
        errors[name] = rel_error(g, num)
    return errors


def check_model(model, idx, targets, per_param=6, seed=0, h=1e-5):
    """Check model.backward against centred differences of the loss.

    For each parameter, `per_param` random entries are perturbed. The model
    should be float64 with dropout 0. Returns {param name: max relative error}.
    """
    rng = np.random.default_rng(seed)
    _, _, cache = model.forward(idx, targets)
    grads = model.backward(cache)
    errors = {}
    for name, p in model.params.items():
        flat = rng.choice(p.size, size=min(per_param, p.size), replace=False)
        indices = [np.unravel_index(j, p.shape) for j in flat]
        num = numerical_gradient_scalar(lambda: model.forward(idx, targets)[1], p, h, indices)
        picks = tuple(np.array(ix) for ix in zip(*indices))
        errors[name] = rel_error(grads[name][picks], num[picks])
    return errors


def layer_cases(rng):
    """Every layer of minigpt with small random float64 inputs: (name, forward, backward, inputs, names)."""
    from . import layers as L
    B, T, C, nh, V = 2, 5, 8, 2, 11

    def r(*shape):
        return rng.standard_normal(shape)

    idx = rng.integers(0, V, size=(B, T))
    targets = rng.integers(0, V, size=(B, T))
    targets[0, 1] = -1                              # one ignored position
    drop_seed = int(rng.integers(1 << 30))
    return [
        ("embedding", lambda wte, wpe: L.embedding_forward(idx, wte, wpe), L.embedding_backward,
         [r(V, C), r(T + 2, C)], ["wte", "wpe"]),
        ("linear", L.linear_forward, L.linear_backward, [r(B, T, C), r(C, 3 * C), r(3 * C)], ["x", "w", "b"]),
        ("layernorm", L.layernorm_forward, L.layernorm_backward, [r(B, T, C), r(C), r(C)], ["x", "w", "b"]),
        ("gelu", L.gelu_forward, L.gelu_backward, [r(B, T, 4 * C)], ["x"]),
        ("dropout", lambda x: L.dropout_forward(x, 0.3, np.random.default_rng(drop_seed)),
         L.dropout_backward, [r(B, T, C)], ["x"]),
        ("attention", lambda qkv: L.attention_forward(qkv, nh), L.attention_backward, [r(B, T, 3 * C)], ["qkv"]),
        ("attention+dropout", lambda qkv: L.attention_forward(qkv, nh, 0.2, np.random.default_rng(drop_seed)),
         L.attention_backward, [r(B, T, 3 * C)], ["qkv"]),
        ("cross_entropy", lambda logits: L.cross_entropy_forward(logits, targets),
         L.cross_entropy_backward, [r(B, T, V)], ["logits"]),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minigpt.gradcheck",
        description="Check every layer's backward and the whole model against centred differences (float64).")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random inputs")
    parser.add_argument("--per-param", type=int, default=6,
                        help="entries checked per model parameter")
    args = parser.parse_args(argv)

    from .model import GPT, GPTConfig
    rng = np.random.default_rng(args.seed)
    rows = []
    for name, fwd, bwd, inputs, names in layer_cases(rng):
        for pname, err in check_layer(fwd, bwd, inputs, names, seed=args.seed).items():
            rows.append((name, pname, err))
    config = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8)
    model = GPT(config, seed=args.seed, dtype=np.float64)
    for p in model.params.values():                 # non-trivial values everywhere
        p += 0.1 * rng.standard_normal(p.shape)
    idx = rng.integers(0, 13, size=(2, 6))
    targets = rng.integers(0, 13, size=(2, 6))
    for pname, err in check_model(model, idx, targets, args.per_param, args.seed).items():
        rows.append(("model", pname, err))

    width = max(len(r[1]) for r in rows)
    print(f"{'layer':<18} {'parameter':<{width}} {'max rel error':>14}  result")
    failed = 0
    for layer, pname, err in rows:
        ok = err < TOLERANCE
        failed += not ok
        print(f"{layer:<18} {pname:<{width}} {err:>14.2e}  {'OK' if ok else 'FAIL'}")
    print(f"{len(rows) - failed} OK, {failed} FAIL (tolerance {TOLERANCE:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
