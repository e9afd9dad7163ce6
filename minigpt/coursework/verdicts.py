"""Verdicts on the whole run: the whole-model test, and the line for a file that will not load.

model_test(run, report, timeout) grades minigpt's GPT with the student's passing
pairs swapped in; run(swap, attempt, fd) is grade.py's: one run of the model job
in a child process, returning its record. Nothing here starts a process.
"""
from dataclasses import dataclass

import numpy as np

from . import runner
from .cases import LAYERS, POINTS

MODEL_TOLERANCE = (1e-6, 1e-7)                             # finite differences, the reference


@dataclass
class Test:
    name: str                   # "layernorm_backward: 3-D input, no bias"
    function: str
    score: float
    max_score: float
    status: str                 # pass, fail, not implemented, not graded
    output: str = ""
    printed: str = ""           # what the student's code printed during this test (its first characters)
    hidden: bool = False        # a case from --extra-cases


AVAILABLE = "the grader's Python has its standard library and numpy, nothing else is sure to be there"


def import_line(error, timeout):
    """The one line for a file that would not load: why, and what to do about it."""
    if error.startswith("importing it did not finish"):
        return (f"importing it took longer than the {timeout:g} s limit (--timeout): code at the top level of "
                'the file runs on import, so put self-tests under `if __name__ == "__main__":`')
    if error.startswith("it does not import: ") and ("ModuleNotFoundError" in error or "ImportError" in error):
        return f"{error}; {AVAILABLE} (use NumPy and math)"
    return error


def _culprits(run, swap):
    """{layer: why} for each of the student's pairs that, alone in minigpt's GPT, makes its loss or
    gradients differ from minigpt's (no finite differences: minigpt's gradient is the reference)."""
    found = {}
    for layer in dict.fromkeys(f.rsplit("_", 1)[0] for f in swap):
        rec = run([f"{layer}_forward", f"{layer}_backward"], f"alone_{layer}", fd=False)
        loss, ref_loss = rec.get("loss", [np.nan, 0.0])
        wrong = [(k, ref) for k, (_, ref) in rec.get("params", {}).items() if not ref <= MODEL_TOLERANCE[1]]
        if rec.get("status") != "ok":
            found[layer] = "it stops the model"
        elif not abs(loss - ref_loss) <= 1e-9 * max(1.0, abs(ref_loss)):
            found[layer] = f"the loss is {loss:.6f}, minigpt's {ref_loss:.6f}"
        elif wrong:
            found[layer] = f"{wrong[0][0]}: relative error {wrong[0][1]:.1e} against minigpt's gradient"
    return found


def _blame(culprits):
    return "; ".join(f"your {layer} pair breaks the model alone ({why}): it passes its own cases, so look for "
                     "state kept outside the cache, or a shape the cases do not have" for layer, why in
                     culprits.items()) + f" (no share for {', '.join(culprits)})"


def model_test(run, report, timeout, swap=None, blamed=()):
    """The whole GPT, float64, with every forward/backward pair that passed all its visible tests
    swapped in (a hidden case never decides it, so it tells nothing of them before release); it
    earns a share of its points for each such layer when the gradients match.
    A pair that raises, hangs or ends the process in it is left out, and the model runs again.
    When the gradients are wrong, each pair runs alone in the model, to name the layer that
    breaks it; the model runs again without it, and the others keep their share."""
    if swap is None:                # decided on the visible cases alone: the model test is always visible
        shown = [t for t in report.tests if not t.hidden]
        passes = lambda f: {t.status for t in shown if t.function == f} == {"pass"}   # noqa: E731
        swap = [f"{layer}_{way}" for layer in LAYERS for way in ("forward", "backward")
                if passes(f"{layer}_forward") and passes(f"{layer}_backward")]   # caches are private
    pairs = len(swap) // 2
    name = f"model: one GPT forward and backward with your {pairs} of {len(LAYERS)} passing layers"
    if not swap:
        return Test("model: one GPT forward and backward with your functions", "model", 0.0, POINTS["model"],
                    "not graded", "not graded yet: none of your functions passes its own tests")
    left_out = []                                   # (layer, why) of pairs that stopped the model
    while True:
        rec = run(swap, f"{len(left_out)}{'b' * len(blamed)}")
        status = rec.get("status")
        if status == "ok":
            break
        why = {"timeout": f"did not finish within {timeout:g} s (a call in the model), or the model's "
                          f"{runner.model_time_limit(timeout):g} s in all",
               "error": f"raised {rec.get('message')}",
               "bad_return": f"{rec.get('message')}",
               "uses_minigpt": f"calls minigpt's own code ({rec.get('file')}), which earns no points"}.get(
            status, "did not finish (an endless loop? sys.exit?)")
        culprit = rec.get("function") or ""
        layer = culprit.rsplit("_", 1)[0]
        if status == "uses_minigpt" or culprit not in swap:
            return Test(name, "model", 0.0, POINTS["model"], "fail", why)
        left_out.append((layer, f"{culprit} {why}"))    # run again without that pair
        swap = [f for f in swap if not f.startswith(layer + "_")]
        if not swap:
            return Test(name, "model", 0.0, POINTS["model"], "fail", left_out[0][1])
    pairs = len(swap) // 2
    params = rec.get("params", {})
    bad = [(k, fd, ref) for k, (fd, ref) in params.items()
           if not (fd <= MODEL_TOLERANCE[0] and ref <= MODEL_TOLERANCE[1])]
    loss, ref_loss = rec.get("loss", [np.nan, 0.0])
    lines = [f"{k}: {fd:.1e} against finite differences, {ref:.1e} against minigpt" for k, (fd, ref) in
             params.items()]
    if abs(loss - ref_loss) > 1e-9 * max(1.0, abs(ref_loss)):
        bad.insert(0, ("loss", loss, ref_loss))
        why = f"the loss is {loss:.6f}, minigpt's {ref_loss:.6f}"
    elif bad:
        k, fd, ref = bad[0]
        why = (f"{k}: relative error {fd:.1e} against finite differences, {ref:.1e} against minigpt's "
               f"gradient ({len(bad)} of {len(params)} parameters wrong)")
    if bad and not blamed:
        culprits = _culprits(run, swap)
        if culprits and len(culprits) < len(swap) // 2:   # the others may still earn their share
            swap = [f for f in swap if f.rsplit("_", 1)[0] not in culprits]
            rest = model_test(run, report, timeout, swap, blamed=culprits)
            rest.output = f"{_blame(culprits)}; then {rest.output}"
            rest.status = "fail"                        # a layer of the file is wrong
            return rest
        if culprits:
            why = f"{_blame(culprits)}: {why}"
        else:
            why += " (no single layer of yours breaks it alone: two of them together do)"
    if bad:
        return Test(name, "model", 0.0, POINTS["model"], "fail", why + "\n" + "\n".join(lines))
    earned = POINTS["model"] * pairs / len(LAYERS)           # a share for each layer that works in it
    why = (f"all {len(params)} parameters match" if pairs == len(LAYERS) else
           f"all {len(params)} parameters match with the {pairs} of {len(LAYERS)} layers that pass "
           "their own tests (a share of the points for each)")
    if left_out:
        why = "; ".join(f"left out {layer}: {w}" for layer, w in left_out) + f"; then {why}"
    return Test(name, "model", earned, POINTS["model"], "pass", why + "\n" + "\n".join(lines))
