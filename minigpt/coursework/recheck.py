"""What the grader decides itself from a layer job's outputs, never taking the child's word.

    mark_in_place(case, rec, arrays)          # "modified": from the arrays the child sent back
    with calls() as caller:                   # the student's forward, over a Channel (or here)
        arrays.update(differences(caller, case))   # fd_index_i / fd_value_i, computed here

Writing in place: the child sends back every array argument as each call left it (and
dout after the backward); the grader compares them with its own copies of the case's
inputs, with its own NumPy (a student's file may replace the child's np.array_equal).
Only whether the backward changed its cache is the child's word (the grader never holds
that cache); its check there compares bytes with ndarray's own methods.

Finite differences (the backward is graded against the student's own forward where that
forward fails the case, or is random; elsewhere they only show in the message): the grader asks the student's process for
the forward's outputs on inputs it perturbed itself, one call at a time, and takes the
centred differences here, in float64. The child never sends a difference: whatever it
writes under an fd_ name is dropped when its outbox is read (sandbox.read_results).
"""
import numpy as np

from ..gradcheck import numerical_gradient_scalar
from .runner import Seed, Stopped

H = 1e-5                        # the step of the centred differences
PICKS = 24                      # entries of each input, drawn by the grader's own generator


class Unusable(Exception):
    """The forward gave nothing the differences can use (not a float array of the right shape)."""


def wants_differences(case, rec):
    """Does this case get finite differences (its backward returned; they grade it where its own
    forward fails the case or is random, and show in the message where it is wrong)?"""
    return case.fd and case.layer != "dropout" and (rec.get("backward") or {}).get("status") == "ok"


def _up(a):
    return np.array(a, dtype=np.float64) if a.dtype == np.float32 else a.copy()


def differences(caller, case):
    """{fd_index_i: entries, fd_value_i: centred differences of sum(forward(...) * dout)} for
    each float input i the backward returns a gradient for; {} where the forward gives no
    usable output (on the case's own inputs first: a forward that fails there gets none).
    Raises Stopped when the student's process stopped answering."""
    args = []
    for spec in case.args:
        kind = spec[0]
        args.append(_up(case.arrays[spec[1]]) if kind == "array" else Seed(spec[1]) if kind == "rng" else
                    spec[1] if kind == "value" else None)
    dout = case.arrays[case.dout[1]] if case.dout[0] == "array" else case.dout[1]
    dout = np.asarray(dout, dtype=np.float64)
    shape = np.shape(case.ref_out)
    name = f"{case.layer}_forward"

    def value(call_args):
        got, _ = caller.forward(name, call_args)
        if not isinstance(got, np.ndarray) or got.dtype.kind != "f" or got.shape != shape:
            raise Unusable()
        return float(np.sum(got.astype(np.float64) * dout))

    rng, out = np.random.default_rng(0), {}
    try:
        value(args)
        for i in case.grad_args:
            x = args[i]
            if not isinstance(x, np.ndarray) or x.dtype != np.float64:
                continue
            flat = rng.choice(x.size, size=min(PICKS, x.size), replace=False)
            picks = [np.unravel_index(j, x.shape) for j in flat]
            numeric = numerical_gradient_scalar(lambda: value(args), x, H, picks)
            out[f"fd_index_{i}"] = np.asarray(flat, dtype=np.int64)
            out[f"fd_value_{i}"] = np.asarray([numeric[ix] for ix in picks], dtype=np.float64)
    except Unusable:
        return {}
    return out


def _same(got, expected):
    if got is None or got.shape != expected.shape or got.dtype != expected.dtype:
        return False
    return bool(np.array_equal(got, expected, equal_nan=got.dtype.kind in "fc"))


def mark_in_place(case, rec, arrays):
    """Set each call's "modified" (the arguments it wrote into, then dout, then the child's
    word on the cache), from the arrays it sent back; a missing one counts as written."""
    for way, specs in (("forward", case.args), ("again", case.again_args), ("backward", case.args)):
        call = rec.get(way)
        if not call or call.get("status") != "ok":
            continue
        changed = []
        for j, (spec, name) in enumerate(zip(specs, case.arg_names)):
            if spec[0] != "array":
                continue
            before = case.arrays[spec[1]]
            if way == "backward":               # the inputs as the forward left them
                before = arrays.get(f"forward_arg_{j}", before)
            if not _same(arrays.get(f"{way}_arg_{j}"), before):
                changed.append(name)
        if way == "backward" and case.dout[0] == "array" and not _same(arrays.get("backward_dout"),
                                                                       case.arrays[case.dout[1]]):
            changed.append("dout")
        changed += [m for m in call.get("modified", []) if m == "cache" and way == "backward"]
        call.pop("modified", None)
        if changed:
            call["modified"] = changed


def recheck(jobs, outcomes, timeout, calls):
    """The grader's own checks of every layer job's records: writes in place, then finite
    differences for every record that needs them. calls(): a context manager giving a caller
    (model_check.Remote or Here), started only when some case needs it."""
    for (_, layer_cases), (records, _) in zip(jobs, outcomes):
        for i, case in enumerate(layer_cases):
            if str(i) in records:
                mark_in_place(case, *records[str(i)])
    wanted = [(case, records[str(i)][1]) for (_, layer_cases), (records, _) in zip(jobs, outcomes)
              for i, case in enumerate(layer_cases)
              if str(i) in records and wants_differences(case, records[str(i)][0])]
    if not wanted:
        return
    try:
        with calls() as caller:
            for case, arrays in wanted:
                try:
                    arrays.update(differences(caller, case))
                except Stopped as stop:     # it raised: none for this case
                    if stop.status in ("timeout", "crashed"):
                        raise
    except Stopped:                         # the process stopped answering: the rest get none
        pass
