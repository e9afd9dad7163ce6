"""Verdicts: a student's outputs against minigpt's reference, in one plain line each.

judge_case(case, record, arrays, timeout) turns what runner.py recorded for one
case into two verdicts, (ok, status, message) for the forward and the backward.
status is "pass", "fail", "not implemented" or "not graded"; the message names
the output, its shape, the relative error and a hint. Dropout is judged by its
properties, not by the bits of one random stream.
"""
import numpy as np

from ..gradcheck import rel_error
from .cases import FEATURE_HINTS

TOLERANCE = {"float64": (1e-7, 1e-7), "float32": (1e-4, 1e-3)}     # (forward, backward)
OWN_FORWARD_TOLERANCE = 1e-6    # a backward against centred differences of the student's own forward

HINTS = {
    "embedding_forward": "x = wte[idx] + wpe[:T]",
    "embedding_backward": "dwte adds each position's row of dx at its id (np.add.at); dwpe[:T] sums dx over the batch",
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


def hint(case, function, finite=True):
    if not finite and function in FEATURE_HINTS["large"]:
        return FEATURE_HINTS["large"][function]       # NaN or inf: an overflow, most likely
    for feature in case.features:
        if function in FEATURE_HINTS.get(feature, {}):
            return FEATURE_HINTS[feature][function]
    return HINTS[function]


def _status_line(rec, function, timeout):
    """(status, message) for a call that did not return normally, else None."""
    s = rec.get("status")
    if s == "ok":
        return None
    if s in (None, "missing"):
        return "not implemented", "not implemented yet (no such function in the file)"
    if s == "not_implemented":
        return "not implemented", "not implemented yet"
    if s == "skipped":
        return "fail", "uses minigpt's own code, which earns no points"
    if s == "uses_minigpt":
        return "fail", f"calls minigpt's own code ({rec.get('file')}), which earns no points"
    if s == "timeout":
        return "fail", f"did not finish within {timeout:g} s (an endless loop?)"
    if s == "error":
        return "fail", f"raised {rec.get('message')}"
    if s == "crashed":
        if rec.get("why") == "timeout":
            return "fail", f"did not finish within {timeout:g} s, and the grader had to stop its process"
        return "fail", f"ended the grader's process ({rec.get('why')}): sys.exit or os._exit?"
    if s == "bad_return":
        n = rec.get("length")
        got = f"a {rec.get('type')} of {n}" if n is not None else f"a value of type {rec.get('type')}"
        return "fail", f"should return (out, cache), returned {got}"
    return "fail", f"stopped ({s})"


def compare(name, got_rec, expected, arrays, dtype, tol, case, function, fd=None):
    """One output against the reference: None when it matches, else the reason."""
    if expected is None:
        if got_rec["kind"] != "none":
            return f"{name} should be None (there is no bias)"
        return None
    got, why = _array(name, got_rec, expected.shape, arrays, dtype)
    if why:
        return why
    if not np.all(np.isfinite(got)) and np.all(np.isfinite(expected)):
        return f"{name} {got.shape} has NaN or inf entries (hint: {hint(case, function, finite=False)})"
    err = rel_error(got, expected)
    if err <= tol:
        return None
    extra = ""
    if fd is not None:
        index, value = fd
        extra = f", {rel_error(got.reshape(-1)[index], value):.1e} against finite differences of your forward"
    return (f"{name} {got.shape}: relative error {err:.1e} against the reference{extra} "
            f"(hint: {hint(case, function)})")


def _array(name, got_rec, shape, arrays, dtype):
    """(the returned array, None) when it has the expected shape and dtype, else (None, why)."""
    if got_rec["kind"] == "none":
        return None, f"{name} is None, expected an array of shape {tuple(shape)}"
    if got_rec["kind"] != "array":
        if "length" in got_rec:                      # return (dx,) instead of dx
            return None, (f"{name} is a {got_rec['type']} of {got_rec['length']}, not a NumPy array "
                          f"(return the array itself, not a {got_rec['type']} holding it)")
        return None, f"{name} is a {got_rec.get('type')}, not a NumPy array"
    got = arrays.get(got_rec["key"])
    if got is None:
        return None, f"{name} was not returned"
    if got.shape != tuple(shape):
        return None, f"{name} has shape {got.shape}, expected {tuple(shape)}"
    if got.dtype != np.dtype(dtype):
        return None, f"{name} is {got.dtype} for {dtype} inputs ({DTYPE_HINT})"
    return got, None


def _call_problem(rec, function, timeout):
    """(status, why) when the call did not return normally or wrote into what it was given."""
    line = _status_line(rec, function, timeout)
    if line:
        return line
    names = rec.get("modified") or []
    if names:
        what = names[0] if names[0] in ("dout", "cache") else "its input " + names[0]
        return "fail", f"modifies {what} in place"
    return None


def judge_forward(case, rec, arrays, timeout):
    function = f"{case.layer}_forward"
    problem = _call_problem(rec, function, timeout)
    if problem:
        return problem
    tol = TOLERANCE[case.spec["dtype"]][0]
    if case.layer == "dropout":
        return _dropout_forward(case, rec, arrays)
    if case.own_forward_only:
        return _attention_dropout_forward(case, rec, arrays)
    why = compare("out" if case.layer != "cross_entropy" else "loss", rec["out"], np.asarray(case.ref_out),
                  arrays, case.spec["dtype"], tol, case, function)
    return ("fail", why) if why else ("pass", "")


def judge_backward(case, rec, arrays, forward_status, timeout):
    function = f"{case.layer}_backward"
    if not rec:
        if forward_status == "not implemented":
            return "not graded", (f"not graded: {case.layer}_forward is not implemented yet "
                                  "(the backward needs its cache)")
        return "fail", f"not graded: {case.layer}_forward failed on this case"
    problem = _call_problem(rec, function, timeout)
    if problem:
        return problem
    grads = rec["grads"]
    if len(grads) != len(case.grad_names):
        return "fail", (f"returned {len(grads)} gradients, expected {len(case.grad_names)} "
                        f"({', '.join(case.grad_names)})")
    if case.layer == "dropout":
        return _dropout_backward(case, rec, arrays)
    tol = TOLERANCE[case.spec["dtype"]][1]
    fds = [(arrays[f"fd_index_{i}"], arrays[f"fd_value_{i}"]) if f"fd_index_{i}" in arrays else None
           for i in case.grad_args]
    if case.own_forward_only and not all(fd is not None for fd in fds):
        return "fail", f"not graded: {case.layer}_forward gave no usable output on this case"
    if (forward_status == "fail" or case.own_forward_only) and all(fd is not None or ref is None for fd, ref in zip(fds, case.ref_grads)):
        return _against_own_forward(case, grads, arrays, fds, function,
                                    "its dropout is random" if case.own_forward_only else "which fails this case")
    for name, got, expected, fd in zip(case.grad_names, grads, case.ref_grads, fds):
        why = compare(name, got, expected, arrays, case.spec["dtype"], tol, case, function, fd)
        if why:
            return "fail", why
    return "pass", ""


def _against_own_forward(case, grads, arrays, fds, function, reason):
    """The forward is wrong on this case: the backward is right when it is the gradient of the
    forward the student wrote (so the forward's bug costs the forward alone)."""
    for name, got_rec, expected, fd in zip(case.grad_names, grads, case.ref_grads, fds):
        if expected is None:
            why = compare(name, got_rec, None, arrays, case.spec["dtype"], 0.0, case, function)
        else:
            got, why = _array(name, got_rec, expected.shape, arrays, case.spec["dtype"])
            if not why:
                err = rel_error(got.reshape(-1)[fd[0]], fd[1])
                if not np.isfinite(err) or err > max(OWN_FORWARD_TOLERANCE, TOLERANCE[case.spec["dtype"]][1]):
                    why = (f"{name} {got.shape}: relative error {err:.1e} against finite differences of your "
                           f"own forward ({reason}, so the backward is checked against it; "
                           f"hint: {hint(case, function)})")
        if why:
            return "fail", why
    return "pass", ""


def _dropout_forward(case, rec, arrays):
    x, p = case.arrays["x"], case.spec["p"]
    out, why = _array("out", rec["out"], x.shape, arrays, x.dtype)
    if why:
        return "fail", why
    if p == 0.0:
        return ("pass", "") if np.array_equal(out, x) else ("fail", "with p = 0 dropout must be the identity")
    kept = out != 0
    if rel_error(out[kept], x[kept] / (1.0 - p)) > TOLERANCE[case.spec["dtype"]][0]:
        return "fail", f"kept entries should be x / (1 - p) (hint: {HINTS['dropout_forward']})"
    dropped, n = 1.0 - kept.mean(), kept.size
    if abs(dropped - p) > 5 * np.sqrt(p * (1 - p) / n) + 1.0 / n:
        return "fail", f"dropped {dropped:.3f} of {n} entries, expected about p = {p:g}"
    return "pass", ""


def _attention_dropout_forward(case, rec, arrays):
    """v is one-hot, so each head's first T channels are its weights after dropout: each must be
    0 or att / (1 - p_drop), the rest of the head 0, and about p_drop of the weights dropped."""
    s, att = case.spec, case.extra["att"]
    B, T, C, nh = s["B"], s["T"], s["C"], s["n_head"]
    p, tol = s["p_drop"], TOLERANCE[s["dtype"]][0]
    out, why = _array("out", rec["out"], (B, T, C), arrays, s["dtype"])
    if why:
        return "fail", why
    heads = out.astype(np.float64).reshape(B, T, nh, C // nh).transpose(0, 2, 1, 3)    # (B, nh, T, hs)
    used, rest = heads[..., :T], heads[..., T:]
    causal = np.broadcast_to(np.tril(np.ones((T, T), dtype=bool)), used.shape)
    scale = np.abs(att).max()
    kept = np.abs(used) > tol * scale
    if np.abs(rest).max(initial=0.0) > tol or np.abs(used[~causal]).max(initial=0.0) > tol * scale:
        return "fail", f"out is not dropout(att) @ v (hint: {hint(case, 'attention_forward')})"
    n = int(causal.sum())
    dropped = 1.0 - kept[causal].mean()
    if abs(dropped - p) > 5 * np.sqrt(p * (1 - p) / n) + 1.0 / n:
        return "fail", (f"dropped {dropped:.3f} of the {n} attention weights, expected about p_drop = {p:g} "
                        f"(hint: {hint(case, 'attention_forward')})")
    if kept.any() and rel_error(used[kept], att[kept] / (1.0 - p)) > tol:
        return "fail", f"kept weights should be att / (1 - p_drop) (hint: {hint(case, 'attention_forward')})"
    return "pass", ""


def _dropout_backward(case, rec, arrays):
    """dx must be dout through the mask the student's own forward drew (x has no zeros)."""
    x, dout = case.arrays["x"], case.arrays["dout"]
    out = arrays.get("out")
    if out is None or out.shape != x.shape:
        return "fail", "not graded: dropout_forward gave no usable output on this case"
    why = compare("dx", rec["grads"][0], dout * (out / x), arrays, case.spec["dtype"],
                  TOLERANCE[case.spec["dtype"]][1], case, "dropout_backward")
    return ("fail", why.replace("the reference", "dout through your forward's mask")) if why else ("pass", "")
