"""A correct file in another style: dict caches, einsum, float64 inside with the input's dtype
returned, a mask drawn as rng.random(...) < keep, log-softmax through np.logaddexp.reduce."""
import math

import numpy as np


def embedding_forward(idx, wte, wpe):
    T = idx.shape[1]
    return np.take(wte, idx, axis=0) + wpe[None, :T], {"idx": idx, "V": wte.shape[0], "P": wpe.shape[0]}


def embedding_backward(dx, cache):
    idx, C = cache["idx"], dx.shape[-1]
    onehot = (idx.reshape(-1, 1) == np.arange(cache["V"])).astype(np.float64)   # (N, V)
    dwte = (onehot.T @ dx.reshape(-1, C).astype(np.float64)).astype(dx.dtype)
    dwpe = np.zeros((cache["P"], C), dtype=dx.dtype)
    dwpe[:idx.shape[1]] = dx.sum(axis=0)
    return dwte, dwpe


def linear_forward(x, w, b):
    y = np.einsum("...i,io->...o", x, w)
    return (y if b is None else y + b), {"x": x, "w": w, "bias": b is not None}


def linear_backward(dy, cache):
    x, w = cache["x"], cache["w"]
    dx = np.einsum("...o,io->...i", dy, w)
    dw = np.einsum("ni,no->io", x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1]))
    db = dy.reshape(-1, dy.shape[-1]).sum(axis=0) if cache["bias"] else None
    return dx, dw, db


def layernorm_forward(x, w, b, eps=1e-5):
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)
    xhat = (x64 - mean) / np.sqrt(var + eps)
    out = xhat * w + (0.0 if b is None else b)
    return out.astype(x.dtype), {"xhat": xhat, "std": np.sqrt(var + eps), "w": w, "bias": b is not None}


def layernorm_backward(dout, cache):
    xhat, std, w = cache["xhat"], cache["std"], cache["w"]
    g = dout.astype(np.float64) * w
    C = xhat.shape[-1]
    dx = (C * g - g.sum(-1, keepdims=True) - xhat * (g * xhat).sum(-1, keepdims=True)) / (C * std)
    rows = (-1, C)
    dw = (dout * xhat).reshape(rows).sum(0).astype(dout.dtype)
    db = dout.reshape(rows).sum(0) if cache["bias"] else None
    return dx.astype(dout.dtype), dw, db


def gelu_forward(x):
    c = math.sqrt(2.0 / math.pi)
    return x * 0.5 * (1.0 + np.tanh(c * (x + 0.044715 * x * x * x))), {"x": x}


def gelu_backward(dout, cache):
    x = cache["x"]
    c = math.sqrt(2.0 / math.pi)
    t = np.tanh(c * (x + 0.044715 * x ** 3))
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t ** 2) * c * (1.0 + 0.134145 * x ** 2))


def dropout_forward(x, p, rng):
    if rng is None or p == 0:
        return x.copy(), {"mask": None}
    mask = (rng.random(x.shape) < 1.0 - p) / (1.0 - p)
    return (x * mask).astype(x.dtype), {"mask": mask}


def dropout_backward(dout, cache):
    return dout.copy() if cache["mask"] is None else (dout * cache["mask"]).astype(dout.dtype)


def attention_forward(qkv, n_head, p_drop=0.0, rng=None):
    B, T, C3 = qkv.shape
    C, hs = C3 // 3, C3 // 3 // n_head
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, n_head, hs) for i in range(3))
    s = np.einsum("bthd,buhd->bhtu", q, k) / math.sqrt(hs)
    s = s + np.triu(np.full((T, T), -np.inf), 1)
    a = np.exp(s - s.max(-1, keepdims=True))
    att = a / a.sum(-1, keepdims=True)
    mask = None
    if rng is not None and p_drop > 0:
        mask = (rng.random(att.shape) < 1.0 - p_drop) / (1.0 - p_drop)
    used = att if mask is None else att * mask
    y = np.einsum("bhtu,buhd->bthd", used, v).reshape(B, T, C).astype(qkv.dtype)
    return y, {"q": q, "k": k, "v": v, "att": att, "mask": mask}


def attention_backward(dy, cache):
    q, k, v, att, mask = cache["q"], cache["k"], cache["v"], cache["att"], cache["mask"]
    B, T, nh, hs = q.shape
    dy = dy.reshape(B, T, nh, hs)
    used = att if mask is None else att * mask
    dv = np.einsum("bhtu,bthd->buhd", used, dy)
    datt = np.einsum("bthd,buhd->bhtu", dy, v)
    if mask is not None:
        datt = datt * mask
    ds = att * (datt - (datt * att).sum(-1, keepdims=True)) / math.sqrt(hs)
    dq = np.einsum("bhtu,buhd->bthd", ds, k)
    dk = np.einsum("bhtu,bthd->buhd", ds, q)
    return np.concatenate([g.reshape(B, T, nh * hs) for g in (dq, dk, dv)], axis=-1).astype(dy.dtype)


def cross_entropy_forward(logits, targets, ignore_index=-1):
    V = logits.shape[-1]
    z = logits.reshape(-1, V).astype(np.float64)
    t = targets.reshape(-1)
    keep = t != ignore_index
    lse = np.logaddexp.reduce(z, axis=-1)
    picked = z[np.arange(t.size), np.where(keep, t, 0)]
    loss = ((lse - picked) * keep).sum() / max(keep.sum(), 1)
    return np.array(loss, dtype=logits.dtype), {"z": z, "lse": lse, "t": t, "keep": keep, "shape": logits.shape,
                                                "dtype": logits.dtype}


def cross_entropy_backward(dloss, cache):
    z, t, keep = cache["z"], cache["t"], cache["keep"]
    g = np.exp(z - cache["lse"][:, None])
    g[np.arange(t.size), np.where(keep, t, 0)] -= 1.0
    g *= (keep * dloss / max(keep.sum(), 1))[:, None]
    return g.reshape(cache["shape"]).astype(cache["dtype"])
