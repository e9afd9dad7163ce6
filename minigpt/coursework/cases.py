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

import numpy as np

from .builders import BUILDERS, DEFAULT_EPS, DEFAULT_IGNORE_INDEX

LAYERS = ["embedding", "linear", "layernorm", "gelu", "dropout", "attention", "cross_entropy"]
FUNCTIONS = [f"{layer}_{way}" for layer in LAYERS for way in ("forward", "backward")]
POINTS = {"forward": 4.0, "backward": 8.0, "model": 16.0}   # per function; 100 in all
MAX_ELEMENTS = 200_000          # a hidden case stays small: finite differences run on it

# each layer's parameters and their defaults (a spec may set any of them)
PARAMS = {
    "embedding": dict(B=2, T=5, V=11, C=8, block_size=8, repeat=True),
    "linear": dict(shape=[2, 5, 8], out=12, bias=True),
    "layernorm": dict(shape=[2, 5, 8], bias=True, offset=0.0, scale=1.0, eps=DEFAULT_EPS),
    "gelu": dict(shape=[2, 5, 16], scale=1.5),
    "dropout": dict(shape=[64, 96], p=0.3, rng="generator"),
    "attention": dict(B=2, T=5, C=8, n_head=2, p_drop=0.0, rng="generator", scale=1.0),
    "cross_entropy": dict(shape=[2, 5], V=11, ignore=1, scale=1.0, ignore_index=DEFAULT_IGNORE_INDEX),
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

class CaseError(ValueError):
    """A case spec that cannot be built: the message says which case and why."""


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
