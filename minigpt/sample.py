"""Generate text from a trained model: temperature, top-k, top-p.

(A first version: recomputes the whole context for every new token.)
"""
import numpy as np

from .backend import array_module, to_numpy


def filter_logits(logits, temperature=1.0, top_k=None, top_p=None):
    """Turn one row of logits (V,) into sampling probabilities (host NumPy, float64).

    temperature <= 0 means greedy (all mass on the arg-max). top_k keeps the k
    most likely tokens; top_p keeps the smallest set whose mass reaches p.
    """
    logits = np.asarray(logits, dtype=np.float64)
    V = logits.shape[-1]
    if temperature is None or temperature <= 0:
        probs = np.zeros(V)
        probs[int(np.argmax(logits))] = 1.0
        return probs
    logits = logits / temperature
    if top_k is not None and 0 < top_k < V:
        kth = np.partition(logits, V - top_k)[V - top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if top_p is not None and 0 < top_p < 1:
        order = np.argsort(-probs, kind="stable")
        before = np.cumsum(probs[order]) - probs[order]   # mass of strictly more likely tokens
        keep = order[before < top_p]
        kept = np.zeros(V, dtype=bool)
        kept[keep] = True
        probs = np.where(kept, probs, 0.0)
        probs /= probs.sum()
    return probs


def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, rng=None):
    """Append max_new_tokens sampled tokens to idx.

    idx: (B, T) integer ids (host or device). rng: a numpy Generator (host side).
    Returns a host NumPy array (B, T + max_new_tokens).
    """
    rng = rng if rng is not None else np.random.default_rng()
    xp = array_module(model.params["wte.weight"])
    out = np.array(to_numpy(idx), dtype=np.int64)
    for _ in range(max_new_tokens):
        context = out[:, -model.config.block_size:]
        logits, _, _ = model.forward(xp.asarray(context))
        last = to_numpy(logits[:, -1, :])
        nxt = [rng.choice(last.shape[-1], p=filter_logits(row, temperature, top_k, top_p)) for row in last]
        out = np.concatenate([out, np.array(nxt, dtype=np.int64)[:, None]], axis=1)
    return out
