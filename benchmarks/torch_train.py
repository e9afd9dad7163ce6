"""The default training run with PyTorch doing the steps: the same recipe, the same budget.

    python benchmarks/torch_train.py shakespeare.txt              # beside: python -m minigpt.train shakespeare.txt
    python benchmarks/torch_train.py shakespeare.txt --max-time 2 --out-dir out-torch

Takes exactly `python -m minigpt.train`'s flags and runs minigpt's own training loop
(the time budget and its plan, the learning-rate schedule, the evals on the same
batches, gradient clipping, the checkpoints and the final sample); only the model
and the optimizer are swapped for benchmarks/torch_gpt2.py's TorchGPT (built from
the same initial weights) and torch.optim.AdamW (same betas, eps and decay rule).
So the best val loss it prints is what PyTorch eager reaches with minigpt's recipe
in the same wall-clock budget on the same machine: run the two one after the other
and compare. Not a test and not part of the package (it needs torch).
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402  (NumPy first, as users do)
import torch  # noqa: E402

from minigpt import train  # noqa: E402
from torch_gpt2 import TorchGPT, _is_linear_weight, make_adamw  # noqa: E402


class TorchModel:
    """TorchGPT behind minigpt's GPT interface: forward(idx, targets, train) -> (logits, loss,
    cache), backward(cache, dloss) -> grads, and `params` (NumPy views of the torch
    weights, minigpt's (in, out) layout), so minigpt's loop, checkpoints and sampler run it."""

    def __init__(self, gpt):
        self.config, self.device = gpt.config, "cpu"
        self.net = TorchGPT(gpt.config).load_minigpt_params(gpt.params)
        self.params = {k: _minigpt_view(k, p.data) for k, p in self.net.named_parameters()}

    def forward(self, idx, targets=None, train=False, rng=None):
        self.net.train(train)
        idx = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        targets = None if targets is None else torch.from_numpy(np.asarray(targets, dtype=np.int64))
        with torch.set_grad_enabled(train):
            logits, loss = self.net(idx, targets)
        as_np = None if loss is None else loss.detach().numpy()
        return logits.detach().numpy(), as_np, loss

    def backward(self, loss, dloss=1.0):
        for p in self.net.parameters():
            p.grad = None
        loss.backward(torch.tensor(float(dloss), dtype=loss.dtype))
        return {k: _minigpt_view(k, p.grad) for k, p in self.net.named_parameters()}

    def state_dict(self):
        return {k: np.array(v) for k, v in self.params.items()}

    def num_params(self):
        return sum(v.size for v in self.params.values())


class TorchAdamW:
    """torch.optim.AdamW behind minigpt's AdamW interface (step(grads, lr), state_dict)."""

    def __init__(self, model, opt):
        self.model, self.lr, self.eps, self.weight_decay = model, opt.lr, opt.eps, opt.weight_decay
        self.beta1, self.beta2 = opt.beta1, opt.beta2
        self.opt = make_adamw(model.net, lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps,
                              weight_decay=opt.weight_decay)
        self.t = 0

    def step(self, grads, lr=None):
        """grads are views of the torch gradients, already clipped in place by minigpt's loop."""
        for group in self.opt.param_groups:
            group["lr"] = self.lr if lr is None else lr
        self.opt.step()
        self.t += 1

    def state_dict(self):
        """AdamW's moments in minigpt's layout (zeros, in the parameter's dtype, before the first step)."""
        moments = {"m": {}, "v": {}}
        for k, p in self.model.net.named_parameters():
            state = self.opt.state.get(p)
            for name, torch_name in (("m", "exp_avg"), ("v", "exp_avg_sq")):
                moments[name][k] = (_minigpt_view(k, state[torch_name]) if state
                                    else np.zeros_like(self.model.params[k]))
        return {"t": self.t, **moments}

    def load_state_dict(self, state):
        raise SystemExit("torch_train.py: --resume is not supported (start a fresh run)")


def _minigpt_view(name, tensor):
    """A NumPy view of a torch tensor in minigpt's layout ((in, out) for linear weights)."""
    a = tensor.numpy()
    return a.T if _is_linear_weight(name) else a


def main(argv=None):
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    make_run = train.make_run

    def make_torch_run(*args, **kwargs):
        run = make_run(*args, **kwargs)
        run.model = TorchModel(run.model)
        run.opt = TorchAdamW(run.model, run.opt)
        print(f"torch {torch.__version__} eager: TorchGPT and torch.optim.AdamW in minigpt's training loop",
              flush=True)
        return run
    train.make_run = make_torch_run
    return train.main(argv)


if __name__ == "__main__":
    sys.exit(main())
