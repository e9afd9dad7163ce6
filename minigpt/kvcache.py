"""Inference with a key/value cache: each new token costs one position's work.

Without a cache, generating token t+1 re-runs the model on all t tokens of the
context. But in a causal model the keys and values of the earlier tokens never
change, so we keep them: a step embeds only the new tokens, and their queries
attend to the stored keys and values plus their own.

    prefill:  forward_cached(model, prompt, cache)     # fills positions 0..T-1
    step:     forward_cached(model, next_id, cache)    # one position, T+1 keys

The layers are minigpt.layers' own forward functions (layernorm, linear,
gelu); only attention differs, because its keys and values come from the
cache. Positions are absolute (GPT-2 learns one embedding per position), so a
full cache cannot simply drop its oldest token: sampling then recomputes the
cache on the last block_size tokens (see minigpt.sample.generate_tokens).

Shape letters as in minigpt.layers; t is the number of new tokens in a call,
S = start + t the number of cached positions after it.
"""
import math

from . import layers as L
from .backend import array_module


class KVCache:
    """Per-layer keys and values for up to block_size positions of B sequences.

    k[i], v[i]: (B, nh, block_size, hs) arrays on the model's device, in the
    model's dtype; positions 0..length-1 are filled.
    """

    def __init__(self, model, batch_size):
        cfg = model.config
        wte = model.params["wte.weight"]
        xp = array_module(wte)
        shape = (batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.k = [xp.empty(shape, dtype=wte.dtype) for _ in range(cfg.n_layer)]
        self.v = [xp.empty(shape, dtype=wte.dtype) for _ in range(cfg.n_layer)]
        self.batch_size = batch_size
        self.capacity = cfg.block_size
        self.length = 0

    def reset(self):
        """Forget every cached position (the arrays are reused)."""
        self.length = 0


def cached_attention(qkv, k_cache, v_cache, start, n_head):
    """Causal attention of t new positions over the cache, after storing their keys/values.

    qkv: (B, t, 3C), the c_attn output for positions start..start+t-1;
    k_cache, v_cache: (B, nh, block_size, hs), written at start..start+t-1.
    Returns y: (B, t, C), heads merged.
    """
    xp = array_module(qkv)
    B, t, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    S = start + t
    q, k, v = qkv.reshape(B, t, 3, n_head, hs).transpose(2, 0, 3, 1, 4)   # 3 x (B, nh, t, hs)
    k_cache[:, :, start:S] = k
    v_cache[:, :, start:S] = v
    att = q @ k_cache[:, :, :S].transpose(0, 1, 3, 2)   # (B, nh, t, S)
    att *= 1.0 / math.sqrt(hs)
    if t > 1:   # new position start+i sees cached positions 0..start+i
        future = xp.arange(S)[None, :] > (start + xp.arange(t))[:, None]   # (t, S)
        att[..., future] = -math.inf
    att -= att.max(axis=-1, keepdims=True)
    xp.exp(att, out=att)
    att /= att.sum(axis=-1, keepdims=True)
    y = att @ v_cache[:, :, :S]                    # (B, nh, t, hs)
    return y.transpose(0, 2, 1, 3).reshape(B, t, C)


def forward_cached(model, idx, cache, last_only=False):
    """Run new tokens through the model, reading and extending the cache.

    idx: (B, t) token ids (on the model's device) for positions
    cache.length .. cache.length+t-1, which must stay within block_size.
    last_only: compute logits for the last position alone (all sampling needs).
    Returns logits (B, t, V), or (B, 1, V) with last_only. Equals the
    corresponding rows of model.forward on the whole sequence.
    """
    cfg, P = model.config, model.params
    B, t = idx.shape
    start = cache.length
    if B != cache.batch_size:
        raise ValueError(f"cache holds {cache.batch_size} sequences, got a batch of {B}")
    if start + t > cache.capacity:
        raise ValueError(f"{start} cached + {t} new positions exceed block_size {cache.capacity}")
    x = P["wte.weight"][idx]                       # (B, t, C)
    x += P["wpe.weight"][start:start + t]
    for i in range(cfg.n_layer):
        h = f"h.{i}."
        a, _ = L.layernorm_forward(x, P[h + "ln_1.weight"], P.get(h + "ln_1.bias"))
        qkv, _ = L.linear_forward(a, P[h + "attn.c_attn.weight"], P.get(h + "attn.c_attn.bias"))
        y = cached_attention(qkv, cache.k[i], cache.v[i], start, cfg.n_head)
        y, _ = L.linear_forward(y, P[h + "attn.c_proj.weight"], P.get(h + "attn.c_proj.bias"))
        x = x + y                                  # residual 1
        m, _ = L.layernorm_forward(x, P[h + "ln_2.weight"], P.get(h + "ln_2.bias"))
        f, _ = L.linear_forward(m, P[h + "mlp.c_fc.weight"], P.get(h + "mlp.c_fc.bias"))  # (B, t, 4C)
        g, _ = L.gelu_forward(f)
        y, _ = L.linear_forward(g, P[h + "mlp.c_proj.weight"], P.get(h + "mlp.c_proj.bias"))
        x = x + y                                  # residual 2
    cache.length = start + t
    if last_only:
        x = x[:, -1:]                              # (B, 1, C)
    x, _ = L.layernorm_forward(x, P["ln_f.weight"], P.get("ln_f.bias"))
    T = x.shape[1]
    return (x.reshape(B * T, -1) @ P["wte.weight"].T).reshape(B, T, -1)   # (B, T, V)
