"""The layers of GPT-2 as pure forward/backward function pairs.

Every layer is two functions:

    out, cache = X_forward(x, params...)
    dx, dparams... = X_backward(dout, cache)

The backward returns gradients in the order of the forward's inputs, and the
cache holds only what the backward needs. The same code runs on NumPy and
CuPy arrays: it uses operators and array methods, and asks `array_module`
for the module only where it creates an array. Output dtype equals input
dtype: constants are Python floats (from `math`), never NumPy scalars.

Shape letters used in comments:
    B batch, T time (sequence length), C channels (n_embd),
    nh number of heads, hs head size (C // nh), V vocabulary size, N = B*T.
"""
import math

from .backend import array_module, scatter_add

# ---------------------------------------------------------------- embedding


def embedding_forward(idx, wte, wpe):
    """Token plus position embedding.

    idx: (B, T) integer token ids; wte: (V, C); wpe: (block_size, C).
    Returns x: (B, T, C) = wte[idx] + wpe[:T], and the cache.
    """
    T = idx.shape[1]
    x = wte[idx]                                   # (B, T, C)
    x += wpe[:T]
    return x, (idx, wte.shape, wpe.shape)


def embedding_backward(dx, cache):
    """Returns dwte (V, C) and dwpe (block_size, C) for dx (B, T, C)."""
    idx, wte_shape, wpe_shape = cache
    xp = array_module(dx)
    B, T, C = dx.shape
    dwte = xp.zeros(wte_shape, dtype=dx.dtype)
    scatter_add(dwte, idx.reshape(-1), dx.reshape(-1, C))   # a token may repeat
    dwpe = xp.zeros(wpe_shape, dtype=dx.dtype)
    dwpe[:T] = dx.sum(axis=0)
    return dwte, dwpe

# ---------------------------------------------------------------- linear


def linear_forward(x, w, b):
    """Affine map y = x @ w + b, as one matrix product on a 2-D (N, in) view.

    x: (..., in); w: (in, out); b: (out,) or None. Returns y: (..., out).
    """
    x2 = x.reshape(-1, x.shape[-1])                # (N, in)
    y = x2 @ w                                     # (N, out)
    if b is not None:
        y += b
    return y.reshape(*x.shape[:-1], w.shape[1]), (x, w, b is not None)


def linear_backward(dy, cache):
    """Returns dx (..., in), dw (in, out), db (out,) or None."""
    x, w, has_bias = cache
    dy2 = dy.reshape(-1, dy.shape[-1])             # (N, out)
    x2 = x.reshape(-1, x.shape[-1])                # (N, in)
    dx = (dy2 @ w.T).reshape(x.shape)              # y = x @ w  ->  dx = dy @ w^T
    dw = x2.T @ dy2                                #            ->  dw = x^T @ dy
    db = dy2.sum(axis=0) if has_bias else None     # y += b     ->  db = sum over rows
    return dx, dw, db

# ---------------------------------------------------------------- layernorm


def layernorm_forward(x, w, b, eps=1e-5):
    """Layer normalisation over the last axis, then scale and shift.

    x: (..., C); w, b: (C,). Returns out (..., C); the cache keeps x, mean and
    rstd (1 / standard deviation) and recomputes the normalised x in backward.
    """
    mean = x.mean(axis=-1, keepdims=True)          # (..., 1)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)   # biased variance, as GPT-2
    rstd = 1.0 / (var + eps) ** 0.5                # (..., 1)
    xc *= rstd                                     # xhat, in place
    out = xc * w
    if b is not None:
        out += b
    return out, (x, w, mean, rstd, b is not None)


def layernorm_backward(dout, cache):
    """Returns dx (..., C), dw (C,), db (C,) or None."""
    x, w, mean, rstd, has_bias = cache
    C = x.shape[-1]
    xhat = (x - mean) * rstd                       # recomputed: cheap, saves memory
    lead = tuple(range(dout.ndim - 1))
    db = dout.sum(axis=lead) if has_bias else None # out = xhat * w + b
    dw = (dout * xhat).sum(axis=lead)
    dxhat = dout * w
    # xhat = (x - mean) * rstd, with mean and rstd functions of x as well:
    # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    proj = (dxhat * xhat).sum(axis=-1, keepdims=True) * (1.0 / C)
    dx = dxhat - dxhat.sum(axis=-1, keepdims=True) * (1.0 / C)
    dx -= xhat * proj
    dx *= rstd
    return dx, dw, db

# ---------------------------------------------------------------- GELU

GELU_SCALE = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


def gelu_forward(x):
    """GELU, tanh approximation (as GPT-2):

        gelu(x) = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))

    Returns out (same shape as x); the cache is x itself.
    """
    xp = array_module(x)
    u = x * x
    u *= GELU_CUBIC
    u += 1.0
    u *= x
    u *= GELU_SCALE                                # u = s * (x + 0.044715 x^3)
    t = xp.tanh(u, out=u)
    t += 1.0
    t *= x
    t *= 0.5
    return t, x


def gelu_backward(dout, cache):
    """Returns dx: d/dx gelu = 0.5 (1 + t) + 0.5 x (1 - t^2) s (1 + 3 * 0.044715 x^2)."""
    xp = array_module(dout)
    x = cache
    x2 = x * x
    t = xp.tanh(GELU_SCALE * x * (1.0 + GELU_CUBIC * x2))     # recomputed from x
    du = GELU_SCALE * (1.0 + (3.0 * GELU_CUBIC) * x2)         # du/dx
    dx = 0.5 * x * (1.0 - t * t) * du
    dx += 0.5 * (1.0 + t)
    dx *= dout
    return dx

# ---------------------------------------------------------------- dropout


def dropout_forward(x, p, rng):
    """Inverted dropout: zero each entry with probability p, scale the rest by 1/(1-p).

    x: any shape; p: float in [0, 1); rng: a numpy/cupy Generator (explicit,
    so runs are reproducible). With p == 0 (or rng None) it is the identity.
    Returns out (x's shape) and the cache (the scaled keep-mask, or None).
    """
    if p == 0.0 or rng is None:
        return x, None
    mask = rng.random(x.shape, dtype=x.dtype) >= p
    scale = mask.astype(x.dtype)
    scale *= 1.0 / (1.0 - p)
    return x * scale, scale


def dropout_backward(dout, cache):
    """Returns dx: the upstream gradient through the same kept entries."""
    scale = cache
    return dout if scale is None else dout * scale

# ---------------------------------------------------------------- attention


def attention_forward(qkv, n_head, p_drop=0.0, rng=None):
    """Causal multi-head self-attention on a fused qkv projection.

    Per head: y = softmax(q k^T / sqrt(hs) + causal mask) v.
    qkv: (B, T, 3C), the output of the c_attn linear layer (q, k, v side by side).
    n_head: number of heads nh; p_drop: dropout on the attention weights.
    Returns y: (B, T, C) with the heads merged, and the cache.
    """
    xp = array_module(qkv)
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    q, k, v = qkv.reshape(B, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4)   # 3 x (B, nh, T, hs)
    att = q @ k.transpose(0, 1, 3, 2)              # (B, nh, T, T)
    att *= 1.0 / math.sqrt(hs)
    future = xp.triu(xp.ones((T, T), dtype=bool), k=1)
    att[..., future] = -math.inf                   # position t sees only 0..t
    att -= att.max(axis=-1, keepdims=True)         # softmax, row by row
    xp.exp(att, out=att)
    att /= att.sum(axis=-1, keepdims=True)
    att_d, drop_cache = dropout_forward(att, p_drop, rng)
    y = att_d @ v                                  # (B, nh, T, hs)
    y = y.transpose(0, 2, 1, 3).reshape(B, T, C)   # (B, T, C): heads side by side
    return y, (q, k, v, att, att_d, drop_cache)


def attention_backward(dy, cache):
    """Returns dqkv: (B, T, 3C) for dy: (B, T, C)."""
    xp = array_module(dy)
    q, k, v, att, att_d, drop_cache = cache
    B, nh, T, hs = q.shape
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)       # (B, nh, T, hs)
    dqkv = xp.empty((B, T, 3, nh, hs), dtype=dy.dtype)
    # y = att_d @ v
    datt = dy @ v.transpose(0, 1, 3, 2)            # (B, nh, T, T)
    dqkv[:, :, 2] = (att_d.transpose(0, 1, 3, 2) @ dy).transpose(0, 2, 1, 3)
    datt = dropout_backward(datt, drop_cache)
    # att = softmax(s): ds = att * (datt - sum(datt * att, row)); masked entries have att = 0
    ds = datt * att
    ds -= att * ds.sum(axis=-1, keepdims=True)
    ds *= 1.0 / math.sqrt(hs)                      # s = q k^T / sqrt(hs)
    dqkv[:, :, 0] = (ds @ k).transpose(0, 2, 1, 3)
    dqkv[:, :, 1] = (ds.transpose(0, 1, 3, 2) @ q).transpose(0, 2, 1, 3)
    return dqkv.reshape(B, T, 3 * nh * hs)

# ---------------------------------------------------------------- cross-entropy


def cross_entropy_forward(logits, targets, ignore_index=-1):
    """Mean softmax cross-entropy over the tokens whose target is not ignore_index.

    logits: (..., V); targets: (...) integers. Returns loss (0-d array, logits'
    dtype) and the cache (the softmax probabilities and the targets).
    """
    xp = array_module(logits)
    V = logits.shape[-1]
    z = logits.reshape(-1, V) - logits.reshape(-1, V).max(axis=-1, keepdims=True)   # (N, V)
    t = targets.reshape(-1)
    valid = t != ignore_index
    t = xp.where(valid, t, 0)
    rows = xp.arange(t.shape[0])
    z_target = z[rows, t]                          # (N,)
    probs = xp.exp(z, out=z)
    sums = probs.sum(axis=-1)
    probs /= sums[:, None]
    # -log p(target) = log(sum exp z) - z_target
    nll = xp.log(sums) - z_target
    count = xp.maximum(valid.sum(), 1).astype(logits.dtype)
    loss = (nll * valid).sum() / count
    return loss, (probs, t, valid, count, logits.shape)


def cross_entropy_backward(dloss, cache):
    """Returns dlogits (..., V) = dloss * (softmax - onehot(target)) / count on valid rows."""
    probs, t, valid, count, shape = cache
    xp = array_module(probs)
    dlogits = probs.copy()
    dlogits[xp.arange(t.shape[0]), t] -= 1.0
    dlogits *= (valid.astype(probs.dtype) * (dloss / count))[:, None]
    return dlogits.reshape(shape)
