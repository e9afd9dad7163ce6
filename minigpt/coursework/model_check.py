"""The whole-model check, run in the student's process by runner.py.

A float64 GPT (2 layers, 3 heads, 12 wide; a repeated id, an ignored target)
runs once with minigpt's layers, then with the student's passing pairs
swapped into minigpt.layers: the record gets the two losses and, for every
parameter, the error against finite differences and against minigpt's gradient.
"""
import os

import numpy as np

from .. import layers
from ..gradcheck import rel_error
from ..model import GPT, GPTConfig


class ModelCheck:
    """minigpt's GPT and its answers, computed when made (before the student's file loads)."""

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

    def run(self, student, swap, record, fd=True):
        """The whole GPT with the student's passing functions (swap) in minigpt.layers; fd False
        skips the finite differences (a quick run, to find the layer that breaks it)."""
        saved = {name: getattr(layers, name) for name in swap}
        try:
            for name in swap:
                setattr(layers, name, lambda *a, _name=name: student.call(_name, *a))
            _, loss, caches = self.model.forward(self.idx, self.targets)
            grads = self.model.backward(caches)
            fd = _model_finite_differences(self.model, self.idx, self.targets, grads, self.rng) if fd else \
                {k: 0.0 for k in self.reference}
        finally:
            for name, fn in saved.items():
                setattr(layers, name, fn)
        if student.hit:
            record.update(status="uses_minigpt", file=os.path.basename(student.hit))
            return
        record.update(status="ok", loss=[float(loss), float(self.ref_loss)], params={
            k: [fd[k], rel_error(grads[k], self.reference[k])] for k in self.reference})


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
