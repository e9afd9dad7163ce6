"""The same GPT-2 in PyTorch: the reference that minigpt is checked and timed against.

Not part of the package: it needs torch, which minigpt never does. The module
tree is laid out so that PyTorch's parameter names are exactly minigpt's
(`wte.weight`, `h.0.attn.c_attn.weight`, ...). The one difference is layout:
nn.Linear stores its weight (out, in) while minigpt stores (in, out), so the
linear weights are transposed on the way in and on the way out.

    model = TorchGPT(config).load_minigpt_params(gpt.params)
    logits, loss = model(torch.as_tensor(idx), torch.as_tensor(targets))
    loss.backward()
    grads = model.grads_by_minigpt_name()       # numpy, minigpt's (in, out) layout
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def _is_linear_weight(name):
    """True for the weights that nn.Linear stores transposed relative to minigpt."""
    return name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        C = config.n_embd
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(C, 3 * C, bias=config.bias)
        self.c_proj = nn.Linear(C, C, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        C = config.n_embd
        self.c_fc = nn.Linear(C, 4 * C, bias=config.bias)
        self.c_proj = nn.Linear(4 * C, C, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        C = config.n_embd
        self.ln_1 = nn.LayerNorm(C, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(C, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    """GPT-2 (learned positions, pre-LayerNorm, tanh GELU, tied head) with minigpt's parameter names.

    config: a minigpt GPTConfig (or anything with the same fields).
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)

    def forward(self, idx, targets=None):
        """idx: (B, T) int64. Returns logits (B, T, V) and the mean loss (None without
        targets); target -1 marks a position to ignore, as in minigpt."""
        T = idx.shape[1]
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T            # tied head
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def load_minigpt_params(self, params):
        """Copy a minigpt params dict in (NumPy or CuPy arrays); the model takes their dtype.

        Returns self, so `TorchGPT(config).load_minigpt_params(p)` reads as one line.
        """
        own = dict(self.named_parameters())
        missing = set(own) ^ set(params)
        if missing:
            raise KeyError(f"parameter names differ: {sorted(missing)}")
        dtype = None
        for name, p in params.items():
            a = p.get() if hasattr(p, "get") and not isinstance(p, np.ndarray) else np.asarray(p)
            t = torch.from_numpy(np.ascontiguousarray(a.T if _is_linear_weight(name) else a))
            dtype = t.dtype
            own[name].data = t.clone()
        self.to(dtype)
        return self

    def minigpt_params(self):
        """The parameters as a minigpt params dict of NumPy arrays, (in, out) layout."""
        return {name: _to_minigpt_layout(name, p.detach()) for name, p in self.named_parameters()}

    def grads_by_minigpt_name(self):
        """The gradients after `loss.backward()`, keyed and laid out as minigpt's grads dict."""
        return {name: _to_minigpt_layout(name, p.grad) for name, p in self.named_parameters()}


def _to_minigpt_layout(name, t):
    a = t.cpu().numpy()
    return np.ascontiguousarray(a.T) if _is_linear_weight(name) else a.copy()


def make_adamw(model, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, **kwargs):
    """torch.optim.AdamW with minigpt's rule: decay only parameters with ndim >= 2."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)


if __name__ == "__main__":
    # A quick self-check against minigpt: same params, same loss and gradients.
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from minigpt.model import GPT, GPTConfig
    cfg = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)
    gpt = GPT(cfg, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 50, size=(3, 16))
    tgt = rng.integers(0, 50, size=(3, 16))
    _, loss, cache = gpt.forward(idx, tgt)
    grads = gpt.backward(cache)
    tm = TorchGPT(cfg).load_minigpt_params(gpt.params)
    _, tloss = tm(torch.from_numpy(idx), torch.from_numpy(tgt))
    tloss.backward()
    tg = tm.grads_by_minigpt_name()
    worst = max(float(np.abs(grads[k] - tg[k]).max() / (np.abs(tg[k]).max() + 1e-300)) for k in grads)
    print(f"loss minigpt {float(loss):.12f} torch {tloss.item():.12f}; worst grad rel error {worst:.2e}")
    assert math.isclose(float(loss), tloss.item(), rel_tol=1e-10) and worst < 1e-8
