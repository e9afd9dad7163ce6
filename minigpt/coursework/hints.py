"""The hints in the grader's lines: each keyed to the function and the output that failed.

hint(case, function, output) picks the case's own feature first (a repeated id, an
ignored target, eps, rng None, ...), then the output's, then the function's;
diagnose() reads a hint off the error itself where one bug explains it (a
cross-entropy gradient that is right but for the factor dloss, or for the count;
a LayerNorm output that lacks + b), and for cross_entropy_backward never falls
back to a feature's hint that the error rules out.
"""
import numpy as np

from ..gradcheck import rel_error

# case-specific hints: a case parameter that is "on" -> {function or (function, output): hint}
FEATURE_HINTS = {
    "repeat": {("embedding_backward", "dwte"): "an id that repeats must add up all its rows: np.add.at, "
                                               "not dwte[idx] += dx"},
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

HINTS = {
    "embedding_forward": "x = wte[idx] + wpe[:T]",
    "embedding_backward": "dwte adds each position's row of dx at its id (np.add.at); dwpe[:T] sums dx over the batch",
    ("embedding_backward", "dwte"): "row v of dwte adds up dx at every position whose id is v (np.add.at)",
    ("embedding_backward", "dwpe"): "row t of dwpe is dx summed over the batch at time t; rows t >= T are 0",
    ("linear_backward", "dx"): "dx = dy @ w.T, reshaped to x's shape",
    ("linear_backward", "dw"): "dw = x.T @ dy on the 2-D (N, in) views: (in, out)",
    ("linear_backward", "db"): "db = dy summed over every row (all axes but the last)",
    ("layernorm_backward", "dw"): "dw = sum of dout * xhat over every row (all axes but the last)",
    ("layernorm_backward", "db"): "db = sum of dout over every row (all axes but the last)",
    "linear_forward": "y = x @ w + b on the last axis",
    "linear_backward": "on 2-D views: dx = dy @ w.T, dw = x.T @ dy (in, out), db = dy summed over the rows",
    "layernorm_forward": "var is mean((x - mean)^2) (the biased variance); eps goes inside the sqrt",
    "layernorm_backward": "x reaches xhat through the mean and the variance too: "
                          "dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))",
    "gelu_forward": "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))",
    "gelu_backward": "du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2); and the product rule gives two terms",
    "dropout_forward": "inverted dropout: keep with probability 1 - p and scale the kept entries by 1 / (1 - p)",
    "dropout_backward": "use the forward's mask from the cache (never a new one), scaled by 1 / (1 - p)",
    "attention_forward": "scale by 1/sqrt(hs), set s[t, u] = -inf for u > t before the softmax, "
                         "and split the heads as (B, T, nh, hs) -> (B, nh, T, hs)",
    "attention_backward": "softmax backward: ds = att * (datt - sum(datt * att) over each row); "
                          "dq and dk both carry the 1/sqrt(hs)",
    "cross_entropy_forward": "mean over the counted positions of logsumexp(z) - z[target]",
    "cross_entropy_backward": "dlogits = dloss * (probs - onehot(target)) / count, and 0 on ignored rows",
}
DTYPE_HINT = "float32 in, float32 out: make arrays with dtype=x.dtype, constants as Python floats"


def hint(case, function, output=None, finite=True):
    """The hint for `output` of `function` on this case: the case's own feature first, then the
    function's; NaN or inf points to an overflow (or to log of an underflowed softmax)."""
    if not finite and function in FEATURE_HINTS["large"]:
        return FEATURE_HINTS["large"][function]
    for feature in case.features:
        hints = FEATURE_HINTS.get(feature, {})
        for key in ((function, output), function):
            if key in hints:
                return hints[key]
    return HINTS.get((function, output), HINTS[function])


def diagnose(case, function, name, got, expected):
    """A hint read off the error itself, where one bug explains it; else None (then hint() picks
    one by the case's features)."""
    if function == "layernorm_forward" and case.arrays.get("b") is not None \
            and rel_error(got, expected - case.arrays["b"]) < 1e-6:
        return "out = xhat * w + b: the + b is missing"
    if function != "cross_entropy_backward":
        return None
    dloss = float(case.dout[1])
    targets = np.asarray(case.arrays["targets"]).reshape(-1)
    counted = targets != case.spec["ignore_index"]
    rows = got.reshape(targets.size, -1).astype(np.float64)
    right = expected.reshape(targets.size, -1)[counted]
    if rel_error(rows[counted] * dloss, right) < 1e-6:
        return f"multiply by dloss, the upstream gradient ({dloss:g} here, not always 1)"
    if np.abs(rows[~counted]).max(initial=0.0) > 0:
        return "ignored positions get a gradient of 0"
    ratio = np.sum(rows[counted] * right) / max(np.sum(right * right), 1e-300)   # got = ratio x right?
    if 1e-3 < ratio < 1e3 and rel_error(rows[counted], ratio * right) < 1e-6:
        return (f"divide by the number of counted positions ({int(counted.sum())} here), "
                f"not {int(counted.sum()) / ratio:.3g}")
    if "large" in case.features:                    # a cache from an exp that overflowed
        return FEATURE_HINTS["large"][function]
    return HINTS[function]                          # count and ignored rows are right: not those
