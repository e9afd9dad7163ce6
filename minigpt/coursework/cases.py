"""The test cases the grader runs: shapes, seeds and minigpt's reference answers.

A case is built from a dict of parameters, the same for the cases the kit ships
and for an instructor's hidden ones (`--extra-cases CASES.json`):

    {"cases": [{"layer": "layernorm", "name": "wide rows", "seed": 7, "shape": [3, 4, 96]},
               {"layer": "attention", "seed": 8, "B": 1, "T": 7, "C": 15, "n_head": 5}]}

Every key but `layer` is optional; PARAMS lists each layer's keys and defaults.
`build(spec)` draws the inputs (float64 unless "dtype": "float32") and computes
minigpt's reference output and gradients, in this process: student code never
runs here.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from .. import layers as L

LAYERS = ["embedding", "linear", "layernorm", "gelu", "dropout", "attention", "cross_entropy"]
FUNCTIONS = [f"{layer}_{way}" for layer in LAYERS for way in ("forward", "backward")]
POINTS = {"forward": 4.0, "backward": 8.0, "model": 16.0}   # per function; 100 in all
MAX_ELEMENTS = 200_000          # a hidden case stays small: finite differences run on it

# each layer's parameters and their defaults (a spec may set any of them)
PARAMS = {
    "embedding": dict(B=2, T=5, V=11, C=8, block_size=8, repeat=True),
    "linear": dict(shape=[2, 5, 8], out=12, bias=True),
    "layernorm": dict(shape=[2, 5, 8], bias=True, offset=0.0, scale=1.0, eps=1e-5),
    "gelu": dict(shape=[2, 5, 16], scale=1.5),
    "dropout": dict(shape=[64, 96], p=0.3, rng="generator"),
    "attention": dict(B=2, T=5, C=8, n_head=2, p_drop=0.0, rng="generator", scale=1.0),
    "cross_entropy": dict(shape=[2, 5], V=11, ignore=1, scale=1.0, ignore_index=-1),
}
COMMON = dict(name="", seed=0, dtype="float64")

BUILTIN = [
    dict(layer="embedding", name="repeated ids", seed=1),
    dict(layer="embedding", name="T = 1", seed=2, B=3, T=1, repeat=False),
    dict(layer="embedding", name="float32", seed=3, dtype="float32", T=6, C=12),
    dict(layer="linear", name="3-D input", seed=4),
    dict(layer="linear", name="2-D input", seed=5, shape=[7, 8], out=5),
    dict(layer="linear", name="3-D input, no bias", seed=6, bias=False, shape=[3, 2, 6]),
    dict(layer="linear", name="2-D input, no bias", seed=7, shape=[6, 4], out=9, bias=False),
    dict(layer="linear", name="float32", seed=8, dtype="float32", shape=[2, 3, 10], out=7),
    dict(layer="layernorm", name="3-D input", seed=9),
    dict(layer="layernorm", name="2-D input", seed=10, shape=[7, 12]),
    dict(layer="layernorm", name="3-D input, no bias", seed=11, bias=False, shape=[2, 3, 16]),
    dict(layer="layernorm", name="T = 1", seed=12, shape=[3, 1, 6]),
    dict(layer="layernorm", name="rows with a large mean (1e6)", seed=13, offset=1e6, shape=[2, 4, 10]),
    dict(layer="layernorm", name="eps = 0.01 on rows of small variance", seed=34, shape=[5, 20], scale=0.1,
         eps=0.01),
    dict(layer="layernorm", name="float32", seed=14, dtype="float32", shape=[2, 5, 24]),
    dict(layer="gelu", name="3-D input", seed=15),
    dict(layer="gelu", name="2-D input", seed=16, shape=[9, 7]),
    dict(layer="gelu", name="large |x|", seed=17, scale=8.0),
    dict(layer="gelu", name="float32", seed=18, dtype="float32"),
    dict(layer="dropout", name="p = 0.3", seed=19),
    dict(layer="dropout", name="p = 0.5, 3-D input", seed=20, shape=[8, 16, 32], p=0.5),
    dict(layer="dropout", name="p = 0 is the identity", seed=21, p=0.0),
    dict(layer="dropout", name="rng None is the identity", seed=35, p=0.5, rng="none"),
    dict(layer="dropout", name="float32", seed=22, dtype="float32", p=0.2),
    dict(layer="attention", name="2 heads", seed=23),
    dict(layer="attention", name="1 head", seed=24, T=4, n_head=1),
    dict(layer="attention", name="3 heads of size 3", seed=25, C=9, n_head=3, T=6),
    dict(layer="attention", name="T = 1", seed=26, B=3, T=1),
    dict(layer="attention", name="float32", seed=27, dtype="float32", C=12, n_head=4, T=7),
    dict(layer="attention", name="large scores (qkv x30)", seed=36, B=1, T=6, C=8, n_head=2, scale=30.0),
    dict(layer="attention", name="dropout on the weights, p_drop = 0.3", seed=33, B=4, T=8, C=16, n_head=2,
         p_drop=0.3),
    dict(layer="attention", name="p_drop = 0.3 with rng None is the identity", seed=37, T=6, C=12, n_head=3,
         p_drop=0.3, rng="none"),
    dict(layer="cross_entropy", name="3-D logits, one ignored target", seed=28),
    dict(layer="cross_entropy", name="2-D logits", seed=29, shape=[7], ignore=0),
    dict(layer="cross_entropy", name="large logits (x1000)", seed=30, scale=1000.0),
    dict(layer="cross_entropy", name="all but two targets ignored", seed=31, shape=[2, 4], ignore=6),
    dict(layer="cross_entropy", name="ignore_index = 3 (a class id)", seed=38, shape=[3, 4], V=7, ignore=4,
         ignore_index=3),
    dict(layer="cross_entropy", name="float32", seed=32, dtype="float32"),
]

# case-specific hints: a case parameter that is "on" -> {function or (function, output): hint}
FEATURE_HINTS = {
    "repeat": {("embedding_backward", "dwte"): "an id that repeats must add up all its rows: np.add.at, "
                                               "not dwte[idx] += dx"},
    "no bias": {"linear_forward": "b may be None: then y = x @ w", "layernorm_forward": "b may be None"},
    "ignore": {"cross_entropy_backward": "divide by the number of counted positions, and give ignored rows 0",
               "cross_entropy_forward": "average over the positions whose target is not ignore_index"},
    "ignore_index": {"cross_entropy_forward": "a position is ignored when its target equals the ignore_index "
                                              "argument (here not -1; and t >= 0 is not the test)",
                     "cross_entropy_backward": "ignored positions are those whose target equals ignore_index "
                                               "(the forward's argument): keep them in the cache"},
    "eps": {"layernorm_forward": "use the eps argument, not 1e-5 written out: xhat = (x - mean) / sqrt(var + eps)",
            "layernorm_backward": "rstd = 1 / sqrt(var + eps) with the eps the forward was given"},
    "rng none": {"dropout_forward": "with rng None dropout is the identity: return x unchanged, draw no mask",
                 "dropout_backward": "with rng None the forward dropped nothing: dx = dout",
                 "attention_forward": "with rng None there is no dropout on the weights, whatever p_drop",
                 "attention_backward": "with rng None nothing was dropped: no mask in the backward"},
    "p_drop": {"attention_forward": "y = dropout(att, p_drop, rng) @ v: zero each weight with probability "
                                    "p_drop (rng.random), scale the rest by 1 / (1 - p_drop)",
               "attention_backward": "dv = dropped_att^T dy, and datt = dy v^T goes back through the forward's "
                                     "own mask (kept in the cache, scaled by 1 / (1 - p_drop)) before the "
                                     "softmax backward"},
    "large": {"cross_entropy_forward": "subtract each row's maximum before exp, and take log-softmax as "
                                       "(z - max) - log(sum(exp(z - max))): log(softmax) is -inf where a "
                                       "probability underflows to 0",
              "cross_entropy_backward": "subtract each row's maximum before exp",
              "attention_forward": "subtract each row's maximum score before exp (masked entries stay -inf)",
              "attention_backward": "the softmax must not overflow: subtract each row's maximum score before exp",
              "layernorm_forward": "compute var as mean((x - mean)^2), not mean(x^2) - mean^2"},
}


class CaseError(ValueError):
    """A case spec that cannot be built: the message says which case and why."""


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
    features: tuple = ()            # names in FEATURE_HINTS that this case exercises
    own_forward_only: bool = False  # a random forward: the backward is graded against its own forward
    extra: dict = field(default_factory=dict)       # what a property check needs (attention dropout: att)
    again_args: list = field(default_factory=list)  # a second forward call: other inputs, the same shapes
    again_ref_out: object = None                    # minigpt's output for them
    again_ref_grads: list = field(default_factory=list)   # and its gradients (a backward that reads them
    again_extra: dict = field(default_factory=dict)       # kept state outside its cache)


def check_spec(spec, where):
    """The spec with every default filled in; CaseError naming `where` when it is wrong."""
    if not isinstance(spec, dict):
        raise CaseError(f"{where}: a case must be a JSON object")
    layer = spec.get("layer")
    if layer not in PARAMS:
        raise CaseError(f"{where}: 'layer' must be one of {', '.join(LAYERS)}, got {layer!r}")
    full = {**COMMON, **PARAMS[layer], **spec, "_given": tuple(spec)}
    for key, value in spec.items():
        if key != "layer" and key not in COMMON and key not in PARAMS[layer]:
            raise CaseError(f"{where}: unknown key {key!r} for {layer} (known: "
                            f"{', '.join(sorted([*COMMON, *PARAMS[layer]]))})")
        default = {**COMMON, **PARAMS[layer]}.get(key)
        if key == "layer":
            continue
        if isinstance(default, bool) != isinstance(value, bool) or not _same_kind(default, value):
            raise CaseError(f"{where}: {key!r} must be like {default!r}, got {value!r}")
    if full["dtype"] not in ("float64", "float32"):
        raise CaseError(f"{where}: 'dtype' must be 'float64' or 'float32'")
    if not 0 <= full["seed"] < 2**32:
        raise CaseError(f"{where}: 'seed' must be in [0, 2^32)")
    sizes = [full[k] for k in ("B", "T", "V", "C", "block_size", "out", "n_head") if k in full]
    shape = full.get("shape", [])
    if any(int(s) < 1 for s in [*sizes, *shape]):
        raise CaseError(f"{where}: sizes must be positive")
    elements = math.prod(shape) * max(full.get("V", 1), full.get("out", 1), 1) + math.prod(sizes)
    if elements > MAX_ELEMENTS:
        raise CaseError(f"{where}: too large for finite differences (at most {MAX_ELEMENTS:,} numbers)")
    _check_layer_rules(layer, full, where)
    del full["_given"]
    return full


def _same_kind(default, value):
    if isinstance(default, list):
        return isinstance(value, list) and 1 <= len(value) <= 4 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, type(default))


LIMITS = {   # (layer, key) -> (low, high): the inputs stay where float64 (and float32) do not overflow
    ("gelu", "scale"): (1e-3, 100.0), ("layernorm", "scale"): (1e-3, 1e3), ("layernorm", "offset"): (-1e8, 1e8),
    ("layernorm", "eps"): (1e-12, 1.0), ("attention", "scale"): (1e-3, 100.0),
    ("cross_entropy", "scale"): (1e-3, 1e4), ("cross_entropy", "ignore_index"): (-1000, 1000)}


def _check_layer_rules(layer, s, where):
    if not isinstance(s["name"], str) or (s["name"] == "" and "name" in s.get("_given", ())) \
            or (s["name"] and not s["name"].strip()):
        raise CaseError(f"{where}: 'name' must not be empty (leave it out for a name made from the keys)")
    for (lay, key), (low, high) in LIMITS.items():
        if lay == layer and not low <= s[key] <= high:
            raise CaseError(f"{where}: {key!r} must be in [{low:g}, {high:g}], got {s[key]!r}")
    if layer == "embedding" and s["repeat"] and s["B"] * s["T"] < 2:
        raise CaseError(f"{where}: 'repeat' true needs at least 2 positions (B * T), got {s['B'] * s['T']}")
    if layer == "embedding" and not s["repeat"] and s["V"] < s["B"] * s["T"]:
        raise CaseError(f"{where}: 'repeat' false needs a distinct id for each of the B * T = {s['B'] * s['T']} "
                        f"positions, but V is {s['V']}")
    if layer == "embedding" and s["T"] > s["block_size"]:
        raise CaseError(f"{where}: T ({s['T']}) must not exceed block_size ({s['block_size']})")
    if layer == "attention" and s["C"] % s["n_head"]:
        raise CaseError(f"{where}: C ({s['C']}) must be divisible by n_head ({s['n_head']})")
    if layer == "attention" and not 0.0 <= s["p_drop"] < 1.0:
        raise CaseError(f"{where}: 'p_drop' must be in [0, 1)")
    if layer == "attention" and s["p_drop"] > 0 and s["rng"] == "generator" and s["C"] // s["n_head"] < s["T"]:
        raise CaseError(f"{where}: with p_drop, the head size C // n_head ({s['C'] // s['n_head']}) must be at "
                        f"least T ({s['T']}), so that the dropped weights can be read off the output")
    if layer in ("linear", "layernorm") and len(s["shape"]) < 2:
        raise CaseError(f"{where}: 'shape' needs at least 2 axes, (N, C) or (B, T, C)")
    if layer in ("dropout", "attention") and s["rng"] not in ("generator", "none"):
        raise CaseError(f"{where}: 'rng' must be 'generator' (a seeded numpy Generator) or 'none' (rng=None)")
    if layer == "dropout" and not 0.0 <= s["p"] < 1.0:
        raise CaseError(f"{where}: 'p' must be in [0, 1)")
    if layer == "cross_entropy" and not 0 <= s["ignore"] < math.prod(s["shape"]):
        raise CaseError(f"{where}: 'ignore' must leave at least one counted position")


def build(spec):
    """The Case for a checked spec (see check_spec), with minigpt's reference answers."""
    rng = np.random.default_rng(spec["seed"])
    dtype = np.dtype(spec["dtype"])
    layer = spec["layer"]
    try:
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            case = BUILDERS[layer](spec, rng, dtype)
            again = BUILDERS[layer](spec, np.random.default_rng([spec["seed"], 2]), dtype)
    except FloatingPointError as e:
        raise CaseError(f"{spec['layer']} case {spec['name'] or _default_name(spec)!r}: minigpt's answer "
                        f"overflows ({e})") from None
    case.name = spec["name"] or _default_name(spec)
    _second_call(case, again)
    return case


def _second_call(case, again):
    """The grader calls each forward twice, on other inputs of the same shapes, then the backward on
    the FIRST cache: state kept outside the cache shows. A generator argument keeps the first call's
    seed, so a random forward must draw the same mask again."""
    case.arrays.update({"again_" + k: v for k, v in again.arrays.items() if k != "dout"})
    case.again_args = [("array", "again_" + b[1]) if b[0] == "array" else a for a, b in zip(case.args, again.args)]
    case.again_ref_out, case.again_ref_grads, case.again_extra = again.ref_out, again.ref_grads, again.extra


def _default_name(spec):
    keys = [k for k in PARAMS[spec["layer"]] if k in spec and spec[k] != PARAMS[spec["layer"]][k]]
    return ", ".join(f"{k} {spec[k]}" for k in keys) or f"seed {spec['seed']}"


def up(a):
    """a in float64 (a copy), or None: the reference answers are computed in float64."""
    return None if a is None else np.array(a, dtype=np.float64)


def _normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def _dout(s, shape, dtype):
    """The upstream gradient: from the case's seed alone, so that both forward calls share it."""
    return _normal(np.random.default_rng([s["seed"], 1]), shape, dtype)


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
    eps_given = s["eps"] != PARAMS["layernorm"]["eps"]
    features = (() if s["bias"] else ("no bias",)) + (("large",) if abs(s["offset"]) > 1e3 else ()) + \
        (("eps",) if eps_given else ())
    args = [("array", "x"), ("array", "w"), ("array", "b") if s["bias"] else ("none",)]
    return Case("layernorm", "", s, args + ([("value", float(s["eps"]))] if eps_given else []),
                ["x", "w", "b", "eps"], arrays, [0, 1, 2], ["dx", "dw", "db"], ("array", "dout"),
                out, list(L.layernorm_backward(up(dout), cache)), fd=abs(s["offset"]) < 1e3,
                features=features)


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
    given = ignore_index != PARAMS["cross_entropy"]["ignore_index"]
    features = (("ignore_index",) if given else ()) + (("ignore",) if s["ignore"] else ()) + \
        (("large",) if s["scale"] > 100 else ())
    return Case("cross_entropy", "", s, [("array", "logits"), ("array", "targets")] +
                ([("value", int(ignore_index))] if given else []), ["logits", "targets", "ignore_index"],
                dict(logits=logits, targets=targets), [0], ["dlogits"], ("value", dloss),
                np.asarray(loss), [L.cross_entropy_backward(dloss, cache)], fd=s["scale"] <= 100,
                features=features)


BUILDERS = dict(embedding=_embedding, linear=_linear, layernorm=_layernorm, gelu=_gelu, dropout=_dropout,
                attention=_attention, cross_entropy=_cross_entropy)


def builtin_cases():
    """The cases the kit ships, built."""
    return [build(check_spec(spec, f"built-in case {i} ({spec['name']!r})")) for i, spec in enumerate(BUILTIN, 1)]


def read_extra_cases(path):
    """An instructor's hidden cases from a JSON file: a list of specs, or {"cases": [...]}.
    Raises CaseError (one line: the file, the case and the reason) when it is not valid."""
    import json
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CaseError(f"cannot read extra cases {path}: {e}") from None
    specs = data.get("cases") if isinstance(data, dict) else data
    if not isinstance(specs, list) or not specs:
        raise CaseError(f"{path}: expected a non-empty list of cases, or {{\"cases\": [...]}}")
    cases = []
    for i, spec in enumerate(specs, 1):
        named = f" ({spec['name']!r})" if isinstance(spec, dict) and isinstance(spec.get("name"), str) \
            and spec["name"].strip() else ""
        full = check_spec(spec, f"{path}: case {i}{named}")
        full["name"] = "hidden: " + (full["name"] or _default_name(full))
        try:
            cases.append(build(full))
        except CaseError as e:
            raise CaseError(f"{path}: case {i}{named}: {e}") from None
    check_unique(cases, path)
    return cases


def check_unique(cases, where):
    """CaseError when two cases of one layer have the same name (their tests would too)."""
    seen = set()
    for case in cases:
        if (case.layer, case.name) in seen:
            raise CaseError(f"{where}: two {case.layer} cases are named {case.name.removeprefix('hidden: ')!r}: "
                            "give each its own 'name'")
        seen.add((case.layer, case.name))
