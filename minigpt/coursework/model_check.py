"""The whole-model check, run in the grader's own process.

A float64 GPT (2 layers, 3 heads, 12 wide; a repeated id, an ignored target)
runs once with minigpt's layers, then with the student's passing pairs
swapped in: the record gets the two losses and, for every
parameter, the error against finite differences and against minigpt's gradient.

The GPT, its reference answers, the finite differences and every comparison are
the grader's: a swapped-in function only asks the student's process (a `caller`)
for that one call's outputs, from inputs the grader computed, and keeps the
student's cache there under a handle. Each reply is checked against the shape
of minigpt's own output for the same call before the GPT uses it. So nothing the
student's process writes can change the record except the outputs of the
student's own functions, which are what is graded.
"""
import types

import numpy as np

from .. import layers
from .. import model as model_module
from ..gradcheck import rel_error
from ..model import GPT, GPTConfig
from .runner import Seed, Stopped
from .sandbox import STARTUP_SLACK, ChannelClosed


class ModelCheck:
    """minigpt's GPT and its answers, computed when made."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=3, n_embd=12)
        self.model = GPT(config, seed=seed, dtype=np.float64)
        for p in self.model.params.values():
            p += 0.1 * self.rng.standard_normal(p.shape)
        self.idx = self.rng.integers(0, 11, size=(2, 7))
        self.idx[1, 3] = self.idx[0, 0]
        self.targets = self.rng.integers(0, 11, size=(2, 7))
        self.targets[0, 2] = -1
        _, self.ref_loss, caches = self.model.forward(self.idx, self.targets)
        self.reference = self.model.backward(caches)

    def run(self, caller, swap, record, fd=True):
        """The whole GPT with the student's passing functions (swap) in minigpt.layers, each call
        made by `caller` (Local or Remote); fd False skips the finite differences (a quick run,
        to find the layer that breaks it)."""
        # the GPT calls its layers as model.L.<name>: only it sees the swapped-in functions (the
        # real ones, which call each other, and give each call's expected shapes, stay as they are)
        swapped = types.SimpleNamespace(**{k: v for k, v in vars(layers).items() if not k.startswith("__")})
        for name in swap:
            make = _forward if name.endswith("_forward") else _backward
            setattr(swapped, name, make(caller, name, getattr(layers, name)))
        saved, model_module.L = model_module.L, swapped
        try:
            with np.errstate(all="ignore"):
                _, loss, caches = self.model.forward(self.idx, self.targets)
                grads = self.model.backward(caches)
                fd = _model_finite_differences(self.model, self.idx, self.targets, grads, self.rng) if fd else \
                    {k: 0.0 for k in self.reference}
        except Stopped as stop:
            record.update(status=stop.status, function=stop.function, message=stop.message, file=stop.file)
            return
        except Exception as e:                  # noqa: BLE001 (checked outputs should never get here)
            record.update(status="error", function=getattr(caller, "last", ""),
                          message=f"the GPT could not use its outputs ({type(e).__name__})")
            return
        finally:
            model_module.L = saved
        record.update(status="ok", loss=[float(loss), float(self.ref_loss)], params={
            k: [fd[k], rel_error(grads[k], self.reference[k])] for k in self.reference})


class Here:
    """In this process (trusted code, the tests): the same calls, made through a runner.Local."""

    def __init__(self, local):
        self.local, self.handles = local, 0

    def forward(self, name, args):
        self.handles += 1
        return self.local.forward(name, args, self.handles), self.handles

    def backward(self, name, dout, handle, count):
        return self.local.backward(name, dout, handle, count)


class Remote:
    """Calls the student's functions in the student's process, over a sandbox.Channel: each
    request carries the grader's inputs and a handle for the cache, which stays there."""

    def __init__(self, channel, step):
        self.channel, self.handles = channel, 0
        self._ask(None, (), "", step + STARTUP_SLACK)      # the "loaded" reply, or why the file does not load

    def forward(self, name, args):
        spec, arrays = [], []
        for a in args:
            if isinstance(a, np.ndarray):
                spec.append(["array", len(arrays)])
                arrays.append(a)
            elif isinstance(a, Seed):                   # a generator of that seed, made in the child
                spec.append(["rng", int(a)])
            else:                                       # n_head, p, eps, ignore_index; rng is None here
                spec.append(["value", a if a is None or isinstance(a, (bool, int, float)) else None])
        self.handles += 1
        reply, out = self._ask({"fn": name, "args": spec, "handle": self.handles}, arrays, name)
        return _pick(reply, out, 1, name)[0], self.handles

    def backward(self, name, dout, handle, count):
        head = {"fn": name, "handle": handle, "count": count}
        if not isinstance(dout, np.ndarray):            # the loss's gradient, 1.0
            head["dout"], dout = float(dout), None
        reply, out = self._ask(head, [] if dout is None else [dout], name)
        return _pick(reply, out, count, name)

    def _ask(self, head, arrays, name, step=None):
        try:
            reply, out = self.channel.call(head, arrays, step)
        except ChannelClosed as closed:
            raise Stopped("timeout" if str(closed) == "timeout" else "crashed", name, str(closed)) from None
        status = reply.get("status")
        if status in ("ok", "loaded"):
            return reply, out
        text = lambda key, n: reply[key][:n] if isinstance(reply.get(key), str) else ""   # noqa: E731
        raise Stopped(status if status in ("error", "bad_return", "timeout", "uses_minigpt") else "crashed", name,
                      text("message", 300), text("file", 80))


def _pick(reply, out, count, name):
    """The reply's values (array or None), `count` of them, each pointing at its own array."""
    values = reply.get("values")
    if not isinstance(values, list) or len(values) != count:
        n = len(values) if isinstance(values, list) else "no"
        raise Stopped("bad_return", name, f"a bad return value: {n} values where the GPT needs {count}")
    picked = []
    for v in values:
        picked.append(out[v] if type(v) is int and 0 <= v < len(out) else None)
    return picked


def _forward(caller, name, real):
    def forward(*args):
        caller.last = name
        out, cache = real(*args)                    # minigpt's: the shape the GPT needs, the cache's
        got, handle = caller.forward(name, args)
        return _like(got, out, name, "its output"), (handle, cache)
    return forward


def _backward(caller, name, real):
    def backward(dout, cache):
        caller.last = name
        handle, real_cache = cache
        expected = real(dout, real_cache)
        several = isinstance(expected, tuple)
        expected = list(expected) if several else [expected]
        got = caller.backward(name, dout, handle, len(expected))
        if len(got) != len(expected):
            raise Stopped("bad_return", name, f"a bad return value: {len(got)} gradients where the GPT needs "
                          f"{len(expected)}")
        grads = [_like(g, e, name, f"gradient {i + 1}") for i, (g, e) in enumerate(zip(got, expected))]
        return tuple(grads) if several else grads[0]
    return backward


def _like(got, expected, function, what):
    """The student's array, checked against minigpt's for the same call (shape; a float dtype)."""
    if expected is None:
        return None
    expected = np.asarray(expected)
    if not isinstance(got, np.ndarray) or got.dtype.kind != "f" or got.shape != expected.shape:
        shape = got.shape if isinstance(got, np.ndarray) else type(got).__name__
        raise Stopped("bad_return", function, f"gave {what} as {shape}, where the GPT needs {expected.shape} floats")
    got = got.astype(expected.dtype, copy=False)
    return got if got.shape else got[()]


def _model_finite_differences(model, idx, targets, grads, rng, per_param=3, h=1e-5):
    """{parameter: error} at a few entries of each, measured against the scale of the whole
    gradient (an entry whose true gradient is 0, such as a key bias, would make a
    relative error of 1 out of rounding noise)."""
    errors = {}
    for name, p in model.params.items():
        flat = p.reshape(-1)                        # a view: the model reads the change
        picks = rng.choice(flat.size, size=min(per_param, flat.size), replace=False)
        num = []
        for j in picks:
            old = flat[j]
            flat[j] = old + h
            plus = float(model.forward(idx, targets)[1])
            flat[j] = old - h
            minus = float(model.forward(idx, targets)[1])
            flat[j] = old
            num.append((plus - minus) / (2 * h))
        analytic = np.asarray(grads[name], dtype=np.float64).reshape(-1)
        scale = max(np.abs(analytic).max(), np.abs(num).max(), 1e-12)
        errors[name] = float(np.abs(analytic[picks] - np.asarray(num)).max() / scale)
    return errors
