"""The case builders: one layer's inputs, drawn from a spec, and minigpt's answers for them.

Each builder takes a checked spec (cases.check_spec), a generator and the dtype,
and returns a Case; cases.build calls it twice, for the forward's two calls.
"""
from dataclasses import dataclass, field

import numpy as np

from .. import layers as L
from ..gradcheck import numerical_gradient_scalar, rel_error

DEFAULT_EPS = 1e-5              # layernorm_forward's eps, passed only when a case sets another
DEFAULT_IGNORE_INDEX = -1       # cross_entropy_forward's ignore_index, likewise
OWN_FORWARD_TOLERANCE = 1e-6    # a backward against centred differences of the student's own forward
FD_STEP, FD_PICKS = 1e-5, 24    # the step and the entries per input of the runner's centred differences
FD_MARGIN = 100                 # on a case where they are inexact, the tolerance is this x their error
FD_USELESS = 1e-3               # for minigpt's own forward; past this tolerance they are not used at all


@dataclass
class Case:
    layer: str
    name: str
    spec: dict
    args: list                      # what the forward is called with: ("array", key) | ("value", v) | ...
    arg_names: list                 # a name for each argument, for messages
    arrays: dict                    # key -> input array (saved for the student's process)
    grad_args: list                 # indices of the arguments the backward returns gradients for
    grad_names: list                # dx, dw, db ...
    dout: object                    # ("array", "dout") or ("value", float)
    ref_out: object = None          # minigpt's output (None for dropout: graded by its properties)
    ref_grads: list = field(default_factory=list)   # minigpt's gradients (None where none is expected)
    fd: bool = True                 # also compare with finite differences of the student's forward
    fd_tol: float = OWN_FORWARD_TOLERANCE   # how far a backward may be from them (where they count)
    features: tuple = ()            # names in FEATURE_HINTS that this case exercises
    own_forward_only: bool = False  # a random forward: the backward is graded against its own forward
    extra: dict = field(default_factory=dict)       # what a property check needs (attention dropout: att)
    again_args: list = field(default_factory=list)  # a second forward call: other inputs, the same shapes
    again_ref_out: object = None                    # minigpt's output for them
    again_ref_grads: list = field(default_factory=list)   # and its gradients (a backward that reads them
    again_extra: dict = field(default_factory=dict)       # kept state outside its cache)


def up(a):
    """a in float64 (a copy), or None: the reference answers are computed in float64."""
    return None if a is None else np.array(a, dtype=np.float64)


def _normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def _dout(s, shape, dtype):
    """The upstream gradient: from the case's seed alone, so that both forward calls share it."""
    return _normal(np.random.default_rng([s["seed"], 1]), shape, dtype)


def _fd_tolerance(forward, args, dout, grad_args, grads):
    """The tolerance for a backward against centred differences of the student's forward, on a case
    of large values where they are inexact: FD_MARGIN x the error they make on minigpt's own forward
    (rows with a mean of 1e6: about 1e-5), at least OWN_FORWARD_TOLERANCE."""
    rng, worst = np.random.default_rng(0), 0.0
    for i, grad in zip(grad_args, grads):
        if grad is None:
            continue
        x = args[i]
        flat = rng.choice(x.size, size=min(FD_PICKS, x.size), replace=False)
        picks = [np.unravel_index(j, x.shape) for j in flat]
        numeric = numerical_gradient_scalar(lambda: np.sum(forward(args) * dout), x, FD_STEP, picks)
        values = [numeric[ix] for ix in picks]
        worst = max(worst, rel_error(np.asarray(grad).reshape(-1)[flat], np.asarray(values)))
    return max(OWN_FORWARD_TOLERANCE, FD_MARGIN * worst)


def _embedding(s, rng, dtype):
    if s["repeat"]:
        idx = rng.integers(0, s["V"], size=(s["B"], s["T"]))
        idx.flat[-1] = idx.flat[0]                          # at least one id repeats
    else:
        idx = rng.permutation(s["V"])[:s["B"] * s["T"]].reshape(s["B"], s["T"])   # none does
    wte, wpe = _normal(rng, (s["V"], s["C"]), dtype), _normal(rng, (s["block_size"], s["C"]), dtype)
    out, cache = L.embedding_forward(idx, up(wte), up(wpe))
    dout = _dout(s, out.shape, dtype)
    return Case("embedding", "", s, [("array", "idx"), ("array", "wte"), ("array", "wpe")],
                ["idx", "wte", "wpe"], dict(idx=idx, wte=wte, wpe=wpe, dout=dout), [1, 2], ["dwte", "dwpe"],
                ("array", "dout"), out, list(L.embedding_backward(up(dout), cache)),
                features=("repeat",) if s["repeat"] else ())


def _linear(s, rng, dtype):
    x = _normal(rng, s["shape"], dtype)
    w = _normal(rng, (s["shape"][-1], s["out"]), dtype)
    b = _normal(rng, (s["out"],), dtype) if s["bias"] else None
    out, cache = L.linear_forward(up(x), up(w), up(b))
    dout = _dout(s, out.shape, dtype)
    arrays = dict(x=x, w=w, dout=dout) | ({"b": b} if s["bias"] else {})
    return Case("linear", "", s, [("array", "x"), ("array", "w"), ("array", "b") if s["bias"] else ("none",)],
                ["x", "w", "b"], arrays, [0, 1, 2], ["dx", "dw", "db"], ("array", "dout"),
                out, list(L.linear_backward(up(dout), cache)), features=() if s["bias"] else ("no bias",))


def _layernorm(s, rng, dtype):
    C = s["shape"][-1]
    x = (_normal(rng, s["shape"], np.float64, s["scale"]) + s["offset"]).astype(dtype)
    w = (1.0 + 0.5 * rng.standard_normal(C)).astype(dtype)
    b = _normal(rng, (C,), dtype) if s["bias"] else None
    out, cache = L.layernorm_forward(up(x), up(w), up(b), s["eps"])
    dout = _dout(s, out.shape, dtype)
    arrays = dict(x=x, w=w, dout=dout) | ({"b": b} if s["bias"] else {})
    eps_given = s["eps"] != DEFAULT_EPS
    features = (() if s["bias"] else ("no bias",)) + (("large",) if abs(s["offset"]) > 1e3 else ()) + \
        (("eps",) if eps_given else ())
    args = [("array", "x"), ("array", "w"), ("array", "b") if s["bias"] else ("none",)]
    grads = list(L.layernorm_backward(up(dout), cache))
    tol = OWN_FORWARD_TOLERANCE if abs(s["offset"]) < 1e3 else _fd_tolerance(
        lambda a: L.layernorm_forward(*a, s["eps"])[0], [up(x), up(w), up(b)], up(dout), [0, 1, 2], grads)
    return Case("layernorm", "", s, args + ([("value", float(s["eps"]))] if eps_given else []),
                ["x", "w", "b", "eps"], arrays, [0, 1, 2], ["dx", "dw", "db"], ("array", "dout"),
                out, grads, fd=tol <= FD_USELESS, fd_tol=tol, features=features)


def _gelu(s, rng, dtype):
    x = _normal(rng, s["shape"], dtype, s["scale"])
    out, cache = L.gelu_forward(up(x))
    dout = _dout(s, out.shape, dtype)
    return Case("gelu", "", s, [("array", "x")], ["x"], dict(x=x, dout=dout), [0], ["dx"], ("array", "dout"),
                out, [L.gelu_backward(up(dout), cache)])


def _dropout(s, rng, dtype):
    x = (rng.uniform(0.5, 1.5, s["shape"]) * rng.choice([-1.0, 1.0], s["shape"])).astype(dtype)   # no zeros
    dout = _dout(s, x.shape, dtype)
    seed = int(rng.integers(1 << 31))
    return Case("dropout", "", s, [("array", "x"), ("value", float(s["p"])),
                                   ("rng", seed) if s["rng"] == "generator" else ("none",)],
                ["x", "p", "rng"], dict(x=x, dout=dout), [0], ["dx"], ("array", "dout"), fd=False,
                features=("rng none",) if s["rng"] == "none" else ())


def _attention(s, rng, dtype):
    if s["p_drop"] > 0 and s["rng"] == "generator":
        return _attention_dropout(s, rng, dtype)
    qkv = _normal(rng, (s["B"], s["T"], 3 * s["C"]), dtype, s["scale"])
    out, cache = L.attention_forward(up(qkv), s["n_head"])
    dout = _dout(s, out.shape, dtype)
    args = [("array", "qkv"), ("value", int(s["n_head"]))]
    if s["p_drop"] > 0:                                   # and rng None: no dropout at all
        args += [("value", float(s["p_drop"])), ("none",)]
    features = (("rng none",) if s["p_drop"] > 0 else ()) + (("large",) if s["scale"] > 4 else ())
    return Case("attention", "", s, args, ["qkv", "n_head", "p_drop", "rng"],
                dict(qkv=qkv, dout=dout), [0], ["dqkv"], ("array", "dout"),
                out, [L.attention_backward(up(dout), cache)], features=features)


def _attention_dropout(s, rng, dtype):
    """Dropout on the weights, graded by its properties: v is one-hot (v[u] = e_u in each head),
    so the first T channels of each head's output are the weights after dropout."""
    B, T, C, nh = s["B"], s["T"], s["C"], s["n_head"]
    hs = C // nh
    qkv = _normal(rng, (B, T, 3 * C), dtype, s["scale"])
    v = np.zeros((B, T, nh, hs))
    v[:, np.arange(T), :, np.arange(T)] = 1.0
    qkv[..., 2 * C:] = v.reshape(B, T, C)
    out, cache = L.attention_forward(up(qkv), nh)
    att = out.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)[..., :T]   # (B, nh, T, T), no dropout
    dout = _dout(s, out.shape, dtype)
    return Case("attention", "", s, [("array", "qkv"), ("value", nh), ("value", float(s["p_drop"])),
                                     ("rng", int(rng.integers(1 << 31)))], ["qkv", "n_head", "p_drop", "rng"],
                dict(qkv=qkv, dout=dout), [0], ["dqkv"], ("array", "dout"), out,
                [np.zeros(qkv.shape)], features=("p_drop",), own_forward_only=True,
                extra={"att": att, "grad_scale": L.attention_backward(up(dout), cache)})


class _GivenMask:
    """A stand-in for the rng argument whose draws keep exactly `kept` (rng.random(shape) >= p)."""

    def __init__(self, kept):
        self.kept = kept

    def random(self, shape, dtype=np.float64):
        return np.where(np.broadcast_to(self.kept, shape), 1.0, 0.0).astype(dtype)


def attention_grad_with_mask(case, kept):
    """minigpt's dqkv on an attention dropout case, for the keep-mask `kept` (B, nh, T, T)."""
    s = case.spec
    _, cache = L.attention_forward(up(case.arrays["qkv"]), s["n_head"], s["p_drop"], _GivenMask(kept))
    return L.attention_backward(up(case.arrays["dout"]), cache)


def _cross_entropy(s, rng, dtype):
    shape = list(s["shape"])
    logits = _normal(rng, shape + [s["V"]], dtype, s["scale"])
    ignore_index = s["ignore_index"]
    targets = rng.integers(0, s["V"] - (0 <= ignore_index < s["V"]), size=shape)
    if 0 <= ignore_index < s["V"]:                        # a class id: no other target may be it
        targets[targets >= ignore_index] += 1
    targets.flat[rng.permutation(targets.size)[:s["ignore"]]] = ignore_index
    loss, cache = L.cross_entropy_forward(up(logits), targets, ignore_index)
    dloss = float(np.round(np.random.default_rng([s["seed"], 3]).uniform(0.5, 2.0), 3))
    given = ignore_index != DEFAULT_IGNORE_INDEX
    features = (("ignore_index",) if given else ()) + (("ignore",) if s["ignore"] else ()) + \
        (("large",) if s["scale"] > 100 else ())
    grads = [L.cross_entropy_backward(dloss, cache)]
    tol = OWN_FORWARD_TOLERANCE if s["scale"] <= 100 else _fd_tolerance(
        lambda a: L.cross_entropy_forward(a[0], targets, ignore_index)[0], [up(logits)], dloss, [0], grads)
    return Case("cross_entropy", "", s, [("array", "logits"), ("array", "targets")] +
                ([("value", int(ignore_index))] if given else []), ["logits", "targets", "ignore_index"],
                dict(logits=logits, targets=targets), [0], ["dlogits"], ("value", dloss),
                np.asarray(loss), grads, fd=tol <= FD_USELESS, fd_tol=tol, features=features)


BUILDERS = dict(embedding=_embedding, linear=_linear, layernorm=_layernorm, gelu=_gelu, dropout=_dropout,
                attention=_attention, cross_entropy=_cross_entropy)
