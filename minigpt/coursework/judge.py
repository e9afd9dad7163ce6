"""Verdicts: a student's outputs against minigpt's reference, in one plain line each.

judge_forward and judge_backward turn what runner.py recorded for one case into
a verdict, (status, message): status is "pass", "fail", "not implemented" or
"not graded"; the message names the output, its shape, the relative error and a
hint keyed to that output. Dropout is judged by its properties, not by the bits
of one random stream.

When a backward is right (the rule):
  * it is accepted, output by output, when it equals minigpt's gradient for the
    case's inputs, computed from the cache of the student's own forward (so a
    wrong forward whose cache is still right costs the forward alone);
  * where the student's forward fails the case, an output that is not the
    reference is also accepted when it matches centred differences of that
    forward, but only where that forward depends on the input: the differences
    must be at least DEGENERATE times the size of the true gradient. A forward
    that returns a constant has differences of 0, so its backward gets nothing
    from them (a file of zeros earns nothing).
"""
import numpy as np

from ..gradcheck import rel_error
from .builders import attention_grad_with_mask
from .hints import DTYPE_HINT, HINTS, diagnose, hint

TOLERANCE = {"float64": (1e-7, 1e-7), "float32": (1e-4, 1e-3)}     # (forward, backward)
DEGENERATE = 0.1                # own-forward differences smaller than this (rms, against the true gradient's)
#                                 mean a forward that does not depend on that input: they do not count


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
        return f"{name} {got.shape} has NaN or inf entries (hint: {hint(case, function, name, finite=False)})"
    err = rel_error(got, expected)
    if err <= tol:
        return None
    extra = ""
    if fd is not None:
        index, value = fd
        extra = f", {rel_error(got.reshape(-1)[index], value):.1e} against finite differences of your forward"
    return (f"{name} {got.shape}: relative error {err:.1e} against the reference{extra} "
            f"(hint: {diagnose(case, function, name, got, expected) or hint(case, function, name)})")


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
    if got.dtype != np.dtype(dtype) and got.ndim == 0:      # a scalar loss: any NumPy scalar or 0-d array
        return None, (f"{name} is {got.dtype} for {dtype} inputs (a Python float is always float64: return "
                      "a 0-d array of the input's dtype, np.asarray(loss, dtype=logits.dtype))")
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


def judge_forward(case, rec, arrays, timeout, again=None):
    """The forward's verdict; `again` is the record of its second call (other inputs, same shapes)."""
    function = f"{case.layer}_forward"
    problem = _call_problem(rec, function, timeout)
    if problem:
        return problem
    first = _forward_output(case, rec, arrays, function)
    if first[0] != "pass" or again is None:
        return first
    problem = _call_problem(again, function, timeout)
    if problem:
        return problem[0], f"on a second call (other inputs of the same shapes): {problem[1]}"
    if again.get("status") == "bad_return" or "out" not in again:
        return "fail", "on a second call (other inputs of the same shapes) it did not return (out, cache)"
    if case.layer == "dropout" or case.own_forward_only:
        return _same_mask(case, again, arrays)
    expected = np.asarray(case.again_ref_out)
    why = compare("out" if case.layer != "cross_entropy" else "loss", _renamed(again["out"]), expected,
                  _again_arrays(arrays), case.spec["dtype"], TOLERANCE[case.spec["dtype"]][0], case, function)
    if why:
        return "fail", (f"right on the case's inputs, wrong on a second call with other inputs of the same "
                        f"shapes: {why} (keep no state between calls)")
    return "pass", ""


def _forward_output(case, rec, arrays, function):
    tol = TOLERANCE[case.spec["dtype"]][0]
    if case.layer == "dropout":
        return _dropout_forward(case, rec, arrays)
    if case.own_forward_only:
        return _attention_dropout_forward(case, rec, arrays)
    why = compare("out" if case.layer != "cross_entropy" else "loss", rec["out"], np.asarray(case.ref_out),
                  arrays, case.spec["dtype"], tol, case, function)
    return ("fail", why) if why else ("pass", "")


def _renamed(got_rec):
    return dict(got_rec, key="out") if got_rec.get("kind") == "array" else got_rec


def _again_arrays(arrays):
    return {"out": arrays.get("again_out")}


def _same_mask(case, again, arrays):
    """A random forward called again with a generator of the same seed draws the same mask."""
    first, second = arrays.get("out"), arrays.get("again_out")
    if second is None or second.shape != first.shape:
        return "fail", "on a second call (other inputs of the same shapes) its output has the wrong shape"
    if case.layer == "dropout":
        same = np.array_equal(first != 0, second != 0)
    else:                                   # the kept weights, where both calls' weights are clearly > 0
        T, nh = case.spec["T"], case.spec["n_head"]
        shape = (case.spec["B"], T, nh, case.spec["C"] // nh)
        heads = [a.astype(np.float64).reshape(shape).transpose(0, 2, 1, 3)[..., :T] for a in (first, second)]
        clear = (case.extra["att"] > 1e-3) & (case.again_extra["att"] > 1e-3)
        same = np.array_equal((heads[0] != 0)[clear], (heads[1] != 0)[clear])
    if same:
        return "pass", ""
    return "fail", ("called again with a generator of the same seed it drew a different mask: draw the mask "
                    "with the rng argument (rng.random(shape) >= p), never np.random")


def judge_backward(case, rec, arrays, forward_status, timeout, forward_why=""):
    function = f"{case.layer}_backward"
    if not rec:
        if forward_status == "not implemented":
            return "not graded", (f"not graded: {case.layer}_forward is not implemented yet "
                                  "(the backward needs its cache)")
        return "fail", (f"not graded: {case.layer}_forward failed on this case ({forward_why}), so there is "
                        "no cache to call the backward with: a forward that raises costs its backward too")
    problem = _call_problem(rec, function, timeout)
    if problem:
        return problem
    grads = rec["grads"]
    if len(grads) != len(case.grad_names):
        return "fail", (f"returned {len(grads)} gradients, expected {len(case.grad_names)} "
                        f"({', '.join(case.grad_names)})")
    if case.layer == "dropout":
        return _dropout_backward(case, rec, arrays)
    verdict = _backward_outputs(case, grads, arrays, forward_status == "fail", function)
    if verdict[0] == "fail" and forward_status == "fail":
        verdict = ("fail", verdict[1] + f"; your {case.layer}_forward fails this case too, and the backward is "
                   "graded on the cache it made: a forward that stores a wrong cache costs its backward too")
    return verdict


def _backward_outputs(case, grads, arrays, forward_failed, function):
    """Each output: the reference gradient, or (forward failed, and it depends on that input)
    centred differences of the student's own forward."""
    dtype, tol = case.spec["dtype"], TOLERANCE[case.spec["dtype"]][1]
    if case.own_forward_only:
        why = _attention_dropout_backward(case, grads[0], arrays, function)
        fd = (arrays["fd_index_0"], arrays["fd_value_0"]) if "fd_index_0" in arrays else None
        if why and forward_failed and _own_forward(case, "dqkv", grads[0], case.extra["grad_scale"], arrays,
                                                   fd, function, "its dropout is random") is None:
            why = None                  # rule 2: the gradient of the forward the student wrote (no causal mask)
        return ("fail", why) if why else ("pass", "")
    for i, name, got_rec, expected in zip(case.grad_args, case.grad_names, grads, case.ref_grads):
        fd = (arrays[f"fd_index_{i}"], arrays[f"fd_value_{i}"]) if f"fd_index_{i}" in arrays else None
        why = compare(name, got_rec, expected, arrays, dtype, tol, case, function, fd)
        if why and expected is not None and _second_inputs(case, name, got_rec, arrays, i):
            why = (f"{name} is the gradient for the forward's second call, not for the cache it was given: "
                   "the backward must read only its cache, never state a forward left behind")
        elif why and forward_failed and expected is not None and " has shape " not in why:
            own = _own_forward(case, name, got_rec, expected, arrays, fd, function, "which fails this case")
            why = None if own is None else own if "barely depends" in own else why
        if why:
            return "fail", why
    return "pass", ""


def _attention_dropout_backward(case, got_rec, arrays, function):
    """None, or why not. On the dropout case the answer depends on the student's own mask: dqkv
    must be minigpt's gradient for the mask their forward drew, read off its output (v is one-hot) where that output
    is a dropout of the weights, else off the backward's own dv (dv = dropped_att^T dy, solved
    for dropped_att), which must then be one: each weight 0 or att / (1 - p_drop), about p_drop
    of them dropped (so a backward of zeros, whose mask drops every weight, earns nothing)."""
    s = case.spec
    B, T, C, nh = s["B"], s["T"], s["C"], s["n_head"]
    got, why = _array("dqkv", got_rec, (B, T, 3 * C), arrays, s["dtype"])
    if why:
        return why
    heads = lambda a: a.astype(np.float64).reshape(B, T, nh, C // nh).transpose(0, 2, 1, 3)  # noqa: E731
    out = arrays.get("out")
    kept = _mask_of(case, heads(out)[..., :T], heads(out)[..., T:]) if out is not None and \
        out.shape == (B, T, C) else None
    where = "the mask your forward's output shows"
    if kept is None:                                # dv = A^T dy, and dy (T, hs) has rank T
        dv, dy = heads(got[..., 2 * C:]), heads(np.asarray(case.arrays["dout"]))
        kept = _mask_of(case, np.swapaxes(dv @ np.linalg.pinv(dy), -1, -2))
        where = "the mask your backward's dv implies (your forward's output shows none)"
    if kept is None:
        return ("dqkv: its dv is not dropped_att^T dy for any dropout of the weights, and your "
                f"forward's output shows no mask either (hint: {hint(case, function, 'dqkv')})")
    expected = attention_grad_with_mask(case, kept)
    why = compare("dqkv", got_rec, expected, arrays, s["dtype"], TOLERANCE[s["dtype"]][1], case, function)
    return why and why.replace("against the reference", f"against minigpt's gradient for {where}")


def _mask_of(case, dropped, rest=None):
    """The keep-mask (B, nh, T, T) when `dropped` is the weights after a dropout of about p_drop of
    them (each 0 or att / (1 - p_drop), nothing above the diagonal, `rest` 0), else None."""
    att, p = case.extra["att"], case.spec["p_drop"]
    scale = np.abs(att).max()
    kept = np.abs(dropped) > 0.5 * att / (1.0 - p)
    if rest is not None and np.abs(rest).max(initial=0.0) > 1e-3 * scale:
        return None
    if rel_error(dropped, np.where(kept, att / (1.0 - p), 0.0)) > 1e-3:
        return None
    clear = np.broadcast_to(np.tril(np.ones(att.shape[-2:], dtype=bool)), att.shape) & (att > 1e-9 * scale)
    n = int(clear.sum())
    dropped_share = 1.0 - kept[clear].mean()
    return kept if abs(dropped_share - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1.0 / n else None


def _second_inputs(case, name, got_rec, arrays, i):
    """Does the output equal minigpt's gradient for the forward's second call's inputs?"""
    if not case.again_ref_grads or got_rec.get("kind") != "array":
        return False
    got, expected = arrays.get(got_rec["key"]), case.again_ref_grads[case.grad_args.index(i)]
    return (expected is not None and got is not None and got.shape == expected.shape
            and rel_error(got, expected) <= TOLERANCE[case.spec["dtype"]][1])


def _own_forward(case, name, got_rec, scale, arrays, fd, function, reason):
    """None when the output matches centred differences of the student's forward, which must
    depend on the input (differences at least DEGENERATE x the true gradient's size); else why."""
    got, why = _array(name, got_rec, scale.shape, arrays, case.spec["dtype"])
    if why:
        return why
    if fd is None:
        if not case.fd:
            return f"{name}: finite differences are too inexact on this case's large values to grade against"
        return f"{name}: not graded against your forward: it gave no usable output for finite differences"
    index, value = fd
    rms = lambda a: float(np.sqrt(np.mean(np.square(a)))) if np.size(a) else 0.0   # noqa: E731
    if rms(value) < DEGENERATE * rms(scale):
        return (f"{name} {got.shape}: relative error {rel_error(got, scale):.1e} against the reference; your "
                f"forward barely depends on its input here, so its finite differences do not count "
                f"(hint: {diagnose(case, function, name, got, scale) or hint(case, function, name)})")
    err = rel_error(got.reshape(-1)[index], value)
    if not np.isfinite(err) or err > max(case.fd_tol, TOLERANCE[case.spec["dtype"]][1]):
        return (f"{name} {got.shape}: relative error {err:.1e} against finite differences of your own forward "
                f"({reason}, so the backward is checked against it; hint: {hint(case, function, name)})")
    return None


def _dropout_forward(case, rec, arrays):
    x, p = case.arrays["x"], case.spec["p"]
    out, why = _array("out", rec["out"], x.shape, arrays, x.dtype)
    if why:
        return "fail", why
    if case.spec["rng"] == "none":
        return ("pass", "") if np.array_equal(out, x) else \
            ("fail", f"with rng None dropout must be the identity (hint: {hint(case, 'dropout_forward')})")
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
    """dx must be dout through the mask the student's own forward drew (x has no zeros), and that
    must be a dropout mask: each entry 0, 1 / (1 - p) or 1 (kept unscaled: the identity), not every one 0."""
    x, dout, p = case.arrays["x"], case.arrays["dout"], case.spec["p"]
    out = arrays.get("out")
    if out is None or out.shape != x.shape:
        return "fail", "not graded: dropout_forward gave no usable output on this case"
    mask = out.astype(np.float64) / x
    tol = TOLERANCE[case.spec["dtype"]][0]
    valid = (np.abs(mask) <= tol) | (np.abs(mask * (1.0 - p) - 1.0) <= tol) | (np.abs(mask - 1.0) <= tol)
    if not valid.all() or not mask.any():
        return "fail", ("not graded: your dropout_forward's output is not x through a dropout mask (each entry 0 "
                        "or x / (1 - p), some kept), so there is no mask to pass dout through: a forward that "
                        "fails costs its backward here")
    why = compare("dx", rec["grads"][0], dout * mask, arrays, case.spec["dtype"],
                  TOLERANCE[case.spec["dtype"]][1], case, "dropout_backward")
    return ("fail", why.replace("the reference", "dout through your forward's mask")) if why else ("pass", "")
