"""GPT-2, exactly: learned positions, pre-LayerNorm blocks, tanh-GELU MLP, tied head.

The parameters live in one flat dict `model.params` named like Hugging Face
GPT-2's state dict (without the `transformer.` prefix), with weights stored
(in, out) so every linear is `x @ w + b`. `model.backward(cache)` returns a
dict `grads` with exactly the same keys, so the optimizer, clipping,
checkpoints and the gradient check are loops over keys.
"""
import math
from dataclasses import asdict, dataclass

import numpy as np

from . import layers as L
from .backend import array_module, default_rng, resolve_device, to_device, to_numpy


@dataclass
class GPTConfig:
    vocab_size: int = 65        # V: number of distinct tokens
    block_size: int = 128       # T max: the longest context the model sees (size of wpe)
    n_layer: int = 4            # number of transformer blocks
    n_head: int = 4             # nh: attention heads per block
    n_embd: int = 128           # C: width of the residual stream; divisible by n_head
    dropout: float = 0.0        # dropout probability in training (embeddings, attention, residuals)
    bias: bool = True           # biases in linears and LayerNorms, as GPT-2

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self):
        return asdict(self)


def param_shapes(config):
    """The name -> shape of every parameter, in a fixed order."""
    C, V, T = config.n_embd, config.vocab_size, config.block_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (T, C)}
    for i in range(config.n_layer):
        h = f"h.{i}."
        shapes[h + "ln_1.weight"] = (C,)
        shapes[h + "ln_1.bias"] = (C,)
        shapes[h + "attn.c_attn.weight"] = (C, 3 * C)
        shapes[h + "attn.c_attn.bias"] = (3 * C,)
        shapes[h + "attn.c_proj.weight"] = (C, C)
        shapes[h + "attn.c_proj.bias"] = (C,)
        shapes[h + "ln_2.weight"] = (C,)
        shapes[h + "ln_2.bias"] = (C,)
        shapes[h + "mlp.c_fc.weight"] = (C, 4 * C)
        shapes[h + "mlp.c_fc.bias"] = (4 * C,)
        shapes[h + "mlp.c_proj.weight"] = (4 * C, C)
        shapes[h + "mlp.c_proj.bias"] = (C,)
    shapes["ln_f.weight"] = (C,)
    shapes["ln_f.bias"] = (C,)
    if not config.bias:
        shapes = {k: s for k, s in shapes.items() if not k.endswith(".bias")}
    return shapes


def params_mismatch(found, shapes):
    """Why the arrays `found` ({name: array}) cannot be the parameters `shapes` names,
    in a few words, or None when every name is there with its shape and a float dtype."""
    missing = [k for k in shapes if k not in found]
    extra = [k for k in found if k not in shapes]
    if missing:
        return f"missing {missing[:3]}"
    if extra:
        return f"unexpected tensors {extra[:3]}"
    for name, shape in shapes.items():
        a = found[name]
        if tuple(a.shape) != tuple(shape):
            return f"{name} has shape {tuple(a.shape)}, the config needs {tuple(shape)}"
        if not np.issubdtype(a.dtype, np.floating):
            return f"{name} has dtype {a.dtype}, not floating point"
    return None


def check_ids(ids, vocab_size, what="token id", ignore=None):
    """ValueError unless every id is an integer in 0..vocab_size-1 (or equals `ignore`).

    One min and one max, read on the host: negative ids would otherwise index
    from the end of the embedding and silently give another token's logits."""
    if ids.size == 0:
        return
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{what}s must be integers, got dtype {ids.dtype}")
    lo, hi = int(ids.min()), int(ids.max())
    if ignore is not None and lo == ignore:
        rest = ids[ids != ignore]
        lo = int(rest.min()) if rest.size else 0
    for bad in (lo, hi):
        if not 0 <= bad < vocab_size:
            raise ValueError(f"{what} {bad} is outside the vocabulary 0..{vocab_size - 1}")


def init_params(config, seed=0, dtype=np.float32):
    """GPT-2's initialisation, on the host: N(0, 0.02) weights, residual
    projections (c_proj) scaled by 1/sqrt(2 n_layer), zero biases, LayerNorm weights 1."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith(".bias"):
            p = np.zeros(shape)
        elif ".ln_" in name or name.startswith("ln_f"):
            p = np.ones(shape)
        else:
            std = 0.02
            if name.endswith("c_proj.weight"):
                std /= math.sqrt(2 * config.n_layer)
            p = rng.normal(0.0, std, size=shape)
        params[name] = p.astype(dtype)
    return params


class GPT:
    """A GPT-2 language model whose forward and backward are written by hand."""

    def __init__(self, config, seed=0, dtype=np.float32, params=None):
        self.config = config
        self.params = params if params is not None else init_params(config, seed, dtype)
        self.device = "cpu"

    def to(self, device):
        """Move the parameters to "cpu" or "cuda" (or "auto"); returns self."""
        self.device = resolve_device(device)
        self.params = {k: to_device(p, self.device) for k, p in self.params.items()}
        return self

    def num_params(self):
        """Number of parameters (the tied head counted once)."""
        return sum(int(np.prod(p.shape)) for p in self.params.values())

    def state_dict(self):
        """The parameters as host NumPy arrays."""
        return {k: to_numpy(p) for k, p in self.params.items()}

    # ------------------------------------------------------------ forward

    def forward(self, idx, targets=None, train=False, rng=None):
        """Run the model on token ids.

        idx: (B, T) integer ids in 0..V-1 with T <= block_size; targets: (B, T)
        ids in 0..V-1 or None (-1, and only -1, marks a position to ignore); train: apply dropout, drawn from
        `rng` (a Generator on the parameters' device; one is made if None).
        Returns logits (B, T, V), loss (0-d array, or None without targets),
        and the cache that `backward` needs.
        """
        cfg, P = self.config, self.params
        if getattr(idx, "ndim", None) != 2 or 0 in idx.shape:
            raise ValueError(f"idx must be (B, T) integer ids, got shape {getattr(idx, 'shape', None)}")
        B, T = idx.shape
        if T > cfg.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {cfg.block_size}")
        check_ids(idx, cfg.vocab_size)
        if targets is not None:
            check_ids(targets, cfg.vocab_size, "target", ignore=-1)
        p = cfg.dropout if train else 0.0
        if p > 0.0 and rng is None:
            rng = default_rng(array_module(P["wte.weight"]), None)
        caches = []
        x, c = L.embedding_forward(idx, P["wte.weight"], P["wpe.weight"])  # (B, T, C)
        caches.append(c)
        x, c = L.dropout_forward(x, p, rng)
        caches.append(c)
        for i in range(cfg.n_layer):
            x, c = self._block_forward(i, x, p, rng)
            caches.append(c)
        x, c = L.layernorm_forward(x, P["ln_f.weight"], P.get("ln_f.bias"))
        caches.append(c)
        logits = self._head_forward(x)             # (B, T, V)
        caches.append(x)
        loss = None
        if targets is not None:
            loss, c = L.cross_entropy_forward(logits, targets)
            caches.append(c)
        return logits, loss, caches

    def _head_forward(self, x):
        """The output head, tied to the token embedding: logits = x @ wte^T.

        x: (B, T, C). Returns logits (B, T, V)."""
        B, T, C = x.shape
        return (x.reshape(B * T, C) @ self.params["wte.weight"].T).reshape(B, T, -1)

    def _head_backward(self, dlogits, x):
        """Returns dx (B, T, C) and the head's share of dwte (V, C)."""
        B, T, V = dlogits.shape
        dlogits = dlogits.reshape(B * T, V)
        dwte = dlogits.T @ x.reshape(B * T, -1)            # logits = x @ wte^T
        dx = (dlogits @ self.params["wte.weight"]).reshape(B, T, -1)
        return dx, dwte

    def _block_forward(self, i, x, p, rng):
        """x + attn(ln_1(x)), then x + mlp(ln_2(x)). Returns x (B, T, C) and the cache."""
        P, h = self.params, f"h.{i}."
        a, c_ln1 = L.layernorm_forward(x, P[h + "ln_1.weight"], P.get(h + "ln_1.bias"))
        qkv, c_qkv = L.linear_forward(a, P[h + "attn.c_attn.weight"], P.get(h + "attn.c_attn.bias"))
        y, c_att = L.attention_forward(qkv, self.config.n_head, p, rng)
        y, c_proj = L.linear_forward(y, P[h + "attn.c_proj.weight"], P.get(h + "attn.c_proj.bias"))
        y, c_drop1 = L.dropout_forward(y, p, rng)
        x = x + y                                  # residual 1
        m, c_ln2 = L.layernorm_forward(x, P[h + "ln_2.weight"], P.get(h + "ln_2.bias"))
        f, c_fc = L.linear_forward(m, P[h + "mlp.c_fc.weight"], P.get(h + "mlp.c_fc.bias"))  # (B, T, 4C)
        g, c_gelu = L.gelu_forward(f)
        y, c_mproj = L.linear_forward(g, P[h + "mlp.c_proj.weight"], P.get(h + "mlp.c_proj.bias"))
        y, c_drop2 = L.dropout_forward(y, p, rng)
        x = x + y                                  # residual 2
        return x, (c_ln1, c_qkv, c_att, c_proj, c_drop1, c_ln2, c_fc, c_gelu, c_mproj, c_drop2)

    # ------------------------------------------------------------ what the caches hold
    # forward's caches: [embedding, dropout, block 0 .. block n_layer-1, ln_f, head input, loss];
    # a block's: (ln_1, c_attn, attention, c_proj, dropout, ln_2, c_fc, gelu, mlp c_proj, dropout).
    # These two read them by name, so a lesson never indexes the list.

    def attention_weights(self, caches, i):
        """Block i's attention weights (B, nh, T, T) from forward's caches: row t is how
        position t spreads its attention over positions 0..t (before attention dropout)."""
        return caches[2 + self._block_index(i)][2][3]

    def residual_stream(self, caches, i):
        """The residual stream (B, T, C) entering block i, from forward's caches: i = 0 is the
        embeddings, i = n_layer the stream after the last block (what ln_f normalises)."""
        n = self.config.n_layer
        if not 0 <= i <= n:
            raise IndexError(f"residual stream {i}: the model has streams 0..{n}")
        B, T = caches[0][0].shape                  # the token ids
        ln = caches[2 + i][0] if i < n else caches[2 + n]
        return ln[0].reshape(B, T, -1)             # the LayerNorm's input (cached as (B*T, C))

    def _block_index(self, i):
        if not 0 <= i < self.config.n_layer:
            raise IndexError(f"block {i}: the model has blocks 0..{self.config.n_layer - 1}")
        return i

    # ------------------------------------------------------------ backward

    def backward(self, caches, dloss=1.0):
        """Gradients of dloss * the mean loss for every parameter: a dict with the keys of `params`."""
        cfg, P = self.config, self.params
        grads = {}
        c_emb, c_drop, *c_blocks, c_lnf, x_final, c_ce = caches
        dlogits = L.cross_entropy_backward(dloss, c_ce)           # (B, T, V)
        dx, dwte_head = self._head_backward(dlogits, x_final)
        dx, grads["ln_f.weight"], dlnf_b = L.layernorm_backward(dx, c_lnf)
        if cfg.bias:
            grads["ln_f.bias"] = dlnf_b
        for i in reversed(range(cfg.n_layer)):
            dx = self._block_backward(i, dx, c_blocks[i], grads)
        dx = L.dropout_backward(dx, c_drop)
        # the tied weight: the sum of both uses. The call keeps the two-argument layer
        # contract, so a student's own embedding_backward plugs straight in.
        dwte, grads["wpe.weight"] = L.embedding_backward(dx, c_emb)
        dwte += dwte_head
        grads["wte.weight"] = dwte
        return {k: grads[k] for k in P}           # same keys, same order as params

    def _block_backward(self, i, dx, cache, grads):
        """Walk one block in reverse; writes its parameter gradients into grads."""
        h = f"h.{i}."
        c_ln1, c_qkv, c_att, c_proj, c_drop1, c_ln2, c_fc, c_gelu, c_mproj, c_drop2 = cache
        # x = x + y (MLP): dx flows straight through and into the branch
        dy = L.dropout_backward(dx, c_drop2)
        dg = self._param_backward(L.linear_backward, dy, c_mproj, grads, h + "mlp.c_proj")
        df = L.gelu_backward(dg, c_gelu)
        dm = self._param_backward(L.linear_backward, df, c_fc, grads, h + "mlp.c_fc")
        dx = dx + self._param_backward(L.layernorm_backward, dm, c_ln2, grads, h + "ln_2")
        # x = x + y (attention)
        dy = L.dropout_backward(dx, c_drop1)
        dy = self._param_backward(L.linear_backward, dy, c_proj, grads, h + "attn.c_proj")
        dqkv = L.attention_backward(dy, c_att)
        da = self._param_backward(L.linear_backward, dqkv, c_qkv, grads, h + "attn.c_attn")
        dx += self._param_backward(L.layernorm_backward, da, c_ln1, grads, h + "ln_1")
        return dx

    def _param_backward(self, backward, dout, cache, grads, name):
        """Run a linear or layernorm backward; store its weight (and bias) gradient under name."""
        dx, grads[name + ".weight"], db = backward(dout, cache)
        if self.config.bias:
            grads[name + ".bias"] = db
        return dx
