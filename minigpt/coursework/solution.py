"""The instructor's solution to student_layers.py: GPT-2's layers in plain NumPy.

Written from the formulas in the student template's docstrings, independently of
minigpt/layers.py (which is tuned for speed); the grader gives it full marks.
`python -m minigpt.coursework release OUT --with-solutions` writes the student
template with these bodies in place of `raise NotImplementedError`. Each body
stands alone (no helpers), so that it can be spliced in.
"""
import math

import numpy as np


def embedding_forward(idx, wte, wpe):
    """x = wte[idx] + wpe[:T]."""
    T = idx.shape[1]
    x = wte[idx] + wpe[:T]
    return x, (idx, wte.shape, wpe.shape)


def embedding_backward(dx, cache):
    """dwte: rows summed per id (repeats add up); dwpe: summed over the batch."""
    idx, wte_shape, wpe_shape = cache
    C = dx.shape[-1]
    dwte = np.zeros(wte_shape, dtype=dx.dtype)
    np.add.at(dwte, idx.ravel(), dx.reshape(-1, C))
    dwpe = np.zeros(wpe_shape, dtype=dx.dtype)
    dwpe[:dx.shape[1]] = dx.sum(axis=0)
    return dwte, dwpe


def linear_forward(x, w, b):
    """y = x @ w + b."""
    y = x @ w
    if b is not None:
        y = y + b
    return y, (x, w, b is not None)


def linear_backward(dy, cache):
    """dx = dy w^T, dw = x^T dy, db = sum of dy."""
    x, w, has_bias = cache
    rows_x = x.reshape(-1, x.shape[-1])
    rows_dy = dy.reshape(-1, dy.shape[-1])
    dx = (rows_dy @ w.T).reshape(x.shape)
    dw = rows_x.T @ rows_dy
    db = rows_dy.sum(axis=0) if has_bias else None
    return dx, dw, db


def layernorm_forward(x, w, b, eps=1e-5):
    """out = (x - mean) / sqrt(var + eps) * w + b, per row."""
    centred = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)
    xhat = centred * rstd
    out = xhat * w
    if b is not None:
        out = out + b
    return out, (xhat, rstd, w, b is not None)


def layernorm_backward(dout, cache):
    """dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)); dw, db summed over rows."""
    xhat, rstd, w, has_bias = cache
    C = xhat.shape[-1]
    dxhat = dout * w
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    dw = (dout * xhat).reshape(-1, C).sum(axis=0)
    db = dout.reshape(-1, C).sum(axis=0) if has_bias else None
    return dx, dw, db


def gelu_forward(x):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    s = math.sqrt(2.0 / math.pi)
    out = 0.5 * x * (1.0 + np.tanh(s * (x + 0.044715 * x ** 3)))
    return out, x


def gelu_backward(dout, cache):
    """dout times the derivative of the tanh approximation."""
    x = cache
    s = math.sqrt(2.0 / math.pi)
    t = np.tanh(s * (x + 0.044715 * x ** 3))
    slope = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * s * (1.0 + 3.0 * 0.044715 * x * x)
    return dout * slope


def dropout_forward(x, p, rng):
    """Keep each entry with probability 1 - p, scaled by 1 / (1 - p)."""
    if p == 0.0 or rng is None:
        return x, None
    scale = (rng.random(x.shape) >= p).astype(x.dtype) * (1.0 / (1.0 - p))
    return x * scale, scale


def dropout_backward(dout, cache):
    """The same kept entries, the same scale."""
    scale = cache
    if scale is None:
        return dout.copy()
    return dout * scale


def attention_forward(qkv, n_head, p_drop=0.0, rng=None):
    """softmax(q k^T / sqrt(hs) + causal mask) v, per head."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    heads = qkv.reshape(B, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4)   # (3, B, nh, T, hs)
    q, k, v = heads[0], heads[1], heads[2]
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)                     # (B, nh, T, T)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    s = np.where(future, -np.inf, s)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    att = e / e.sum(axis=-1, keepdims=True)
    keep = None
    att_used = att
    if p_drop > 0.0 and rng is not None:
        keep = (rng.random(att.shape) >= p_drop).astype(qkv.dtype) * (1.0 / (1.0 - p_drop))
        att_used = att * keep
    y = att_used @ v                                                    # (B, nh, T, hs)
    y = y.transpose(0, 2, 1, 3).reshape(B, T, C)
    return y, (q, k, v, att, att_used, keep)


def attention_backward(dy, cache):
    """dv = dropped_att^T dy; datt = dy v^T through the mask; ds = att (datt - rowsum(datt att)); dq, dk."""
    q, k, v, att, att_used, keep = cache
    B, nh, T, hs = q.shape
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)                 # (B, nh, T, hs)
    dv = att_used.transpose(0, 1, 3, 2) @ dy
    datt = dy @ v.transpose(0, 1, 3, 2)
    if keep is not None:
        datt = datt * keep
    ds = att * (datt - (datt * att).sum(axis=-1, keepdims=True))
    dq = ds @ k / math.sqrt(hs)
    dk = ds.transpose(0, 1, 3, 2) @ q / math.sqrt(hs)
    dqkv = np.stack([dq, dk, dv])                                       # (3, B, nh, T, hs)
    return dqkv.transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * nh * hs)


def cross_entropy_forward(logits, targets, ignore_index=-1):
    """Mean of log-sum-exp minus the target's logit, over the counted positions."""
    V = logits.shape[-1]
    z = logits.reshape(-1, V)
    t = targets.reshape(-1)
    counted = t != ignore_index
    safe_t = np.where(counted, t, 0)
    shifted = z - z.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    count = max(int(counted.sum()), 1)
    nll = -log_probs[np.arange(len(t)), safe_t]
    loss = np.asarray((nll * counted).sum() / count, dtype=logits.dtype)
    return loss, (np.exp(log_probs), safe_t, counted, count, logits.shape)


def cross_entropy_backward(dloss, cache):
    """dloss (softmax - onehot) / count on counted rows, 0 on ignored ones."""
    probs, safe_t, counted, count, shape = cache
    dz = probs.copy()
    dz[np.arange(len(safe_t)), safe_t] -= 1.0
    dz *= (counted * (float(dloss) / count)).astype(probs.dtype)[:, None]
    return dz.reshape(shape)
