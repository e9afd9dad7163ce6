"""The layers of GPT-2 as pure forward/backward function pairs.

Every layer is two functions:

    out, cache = X_forward(x, params...)
    dx, dparams... = X_backward(dout, cache)

The backward returns gradients in the order of the forward's inputs, and the
cache holds only what the backward needs. The same code runs on NumPy and
CuPy arrays: it uses operators and array methods, and asks `array_module`
for the module only where it creates an array. Output dtype equals input
dtype: constants are Python floats (from `math`), never NumPy scalars.

Speed: the elementwise math of GELU, LayerNorm, softmax and cross-entropy is
written once as a small kernel on a block of rows (`_gelu`, `_layernorm`,
...) that works in place with `out=` arrays, and `parallel_rows` runs it over
the rows: cache-sized blocks, shared out over the CPU's cores (one call on a
GPU). The kernels are the same formulas, just with fewer temporaries.

Shape letters used in comments:
    B batch, T time (sequence length), C channels (n_embd),
    nh number of heads, hs head size (C // nh), V vocabulary size, N = B*T.
"""
import math
from functools import lru_cache

from .backend import array_module, parallel_rows, scatter_add
from .reductions import column_sums, row_dots, row_means, row_sums

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
    db = column_sums(dy2) if has_bias else None   # y += b     ->  db = sum over rows
    return dx, dw, db

# ---------------------------------------------------------------- layernorm


def layernorm_forward(x, w, b, eps=1e-5):
    """Layer normalisation over the last axis, then scale and shift.

    x: (..., C); w, b: (C,). Returns out (..., C); the cache keeps x, mean and
    rstd (1 / standard deviation) and recomputes the normalised x in backward.
    """
    xp = array_module(x)
    C = x.shape[-1]
    x2 = x.reshape(-1, C)                          # (N, C)
    out = xp.empty(x2.shape, dtype=x.dtype)
    mean = xp.empty((x2.shape[0], 1), dtype=x.dtype)
    rstd = xp.empty_like(mean)
    parallel_rows(_layernorm, x2, out, mean, rstd, w=w, b=b, eps=eps)
    return out.reshape(x.shape), (x2, w, mean, rstd, b is not None)


def _layernorm(x, out, mean, rstd, w, b, eps):
    """One block of rows: out = (x - mean) * rstd * w + b, with the row statistics."""
    xp = array_module(x)
    row_means(x, out=mean)
    xc = xp.subtract(x, mean, out=out)             # x - mean
    var = row_dots(xc, xc) / x.shape[-1]          # biased variance, as GPT-2
    xp.divide(1.0, xp.sqrt(var + eps), out=rstd)   # rstd = 1 / sqrt(var + eps)
    xc *= rstd                                     # xhat
    xc *= w
    if b is not None:
        xc += b


def layernorm_backward(dout, cache):
    """Returns dx (..., C), dw (C,), db (C,) or None."""
    x, w, mean, rstd, has_bias = cache
    xp = array_module(dout)
    d2 = dout.reshape(x.shape)                     # (N, C)
    dx = xp.empty(x.shape, dtype=dout.dtype)
    dout_xhat = xp.empty_like(dx)
    parallel_rows(_layernorm_backward, d2, x, mean, rstd, dx, dout_xhat, w=w)
    dw = column_sums(dout_xhat)                   # out = xhat * w + b
    db = column_sums(d2) if has_bias else None
    return dx.reshape(dout.shape), dw, db


def _layernorm_backward(dout, x, mean, rstd, dx, dout_xhat, w):
    """One block of rows: dx, and dout * xhat for dw."""
    xp = array_module(x)
    xhat = xp.subtract(x, mean, out=dout_xhat)
    xhat *= rstd                                   # recomputed: cheap, saves memory
    dxhat = xp.multiply(dout, w, out=dx)
    # xhat = (x - mean) * rstd, with mean and rstd functions of x as well:
    # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    proj = row_dots(dxhat, xhat) / x.shape[-1]
    dx -= row_means(dxhat)
    dx -= xhat * proj
    dx *= rstd
    xhat *= dout                                   # dout * xhat, summed over rows for dw

# ---------------------------------------------------------------- GELU

GELU_SCALE = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


def gelu_forward(x):
    """GELU, tanh approximation (as GPT-2):

        gelu(x) = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))

    Returns out (same shape as x); the cache is x itself.
    """
    out = array_module(x).empty(x.shape, dtype=x.dtype)
    parallel_rows(_gelu, _flat(x), out.reshape(-1))
    return out, x


def _gelu(x, out):
    """One block: out = gelu(x), with s (x + 0.044715 x^3) computed as x (s + s 0.044715 x^2)."""
    xp = array_module(x)
    u = x * x
    u *= GELU_SCALE * GELU_CUBIC
    u += GELU_SCALE
    u *= x                                         # u = s (x + 0.044715 x^3)
    t = xp.tanh(u, out=out)
    t += 1.0
    t *= x
    t *= 0.5


def gelu_backward(dout, cache):
    """Returns dx: d/dx gelu = 0.5 (1 + t) + 0.5 x (1 - t^2) s (1 + 3 * 0.044715 x^2)."""
    x = cache
    dx = array_module(dout).empty(x.shape, dtype=dout.dtype)
    parallel_rows(_gelu_backward, _flat(dout), _flat(x), dx.reshape(-1))
    return dx


def _gelu_backward(dout, x, dx):
    """One block: dx = dout * gelu'(x), with t = tanh(u) recomputed from x."""
    xp = array_module(x)
    x2 = x * x
    t = x2 * (GELU_SCALE * GELU_CUBIC)
    t += GELU_SCALE
    t *= x
    xp.tanh(t, out=t)                              # t = tanh(s (x + 0.044715 x^3))
    du = x2                                        # du/dx = s (1 + 3 * 0.044715 x^2)
    du *= 3.0 * GELU_SCALE * GELU_CUBIC
    du += GELU_SCALE
    xp.multiply(t, t, out=dx)
    xp.subtract(1.0, dx, out=dx)                   # 1 - t^2
    dx *= x
    dx *= du                                       # x (1 - t^2) du
    t += 1.0
    dx += t                                        # (1 + t) + x (1 - t^2) du
    dx *= dout
    dx *= 0.5


def _flat(a):
    """a as a 1-D array (a view when a is contiguous, as every activation here is)."""
    return a.reshape(-1)

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
    # one copy gives every head its own contiguous (T, hs) q, k and v matrices
    q, k, v = qkv.reshape(B, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4).copy()   # 3 x (B, nh, T, hs)
    q *= 1.0 / math.sqrt(hs)                       # scale q, T/hs times cheaper than scaling q k^T
    att = xp.empty((B, n_head, T, T), dtype=qkv.dtype)        # (B, nh, T, T)
    parallel_rows(_attention_weights, *_heads(att, q, k), mask=causal_mask(xp, T, att.dtype))
    att_d, drop_cache = dropout_forward(att, p_drop, rng)
    y = xp.empty_like(q)
    parallel_rows(_matmul, *_heads(att_d, v, y))              # y = att_d @ v: (B, nh, T, hs)
    y = y.transpose(0, 2, 1, 3).reshape(B, T, C)   # (B, T, C): heads side by side
    return y, (q, k, v, att, att_d, drop_cache)     # q already scaled by 1/sqrt(hs)


def _heads(*arrays):
    """(B, nh, ...) contiguous arrays as (B*nh, ...) views: one row per head, for parallel_rows."""
    return [a.reshape(-1, *a.shape[2:]) for a in arrays]


@lru_cache(maxsize=16)
def causal_mask(xp, T, dtype):
    """(T, T) additive mask: 0 where query t may see key s (s <= t), -inf above the diagonal."""
    return xp.triu(xp.full((T, T), -math.inf, dtype=dtype), k=1)


def _attention_weights(att, q, k, mask):
    """One block of heads: att = softmax(q k^T + mask), row by row (q comes scaled)."""
    xp = array_module(att)
    xp.matmul(q, k.transpose(0, 2, 1), out=att)
    att += mask                                    # position t sees only 0..t
    att -= att.max(axis=-1, keepdims=True)
    xp.exp(att, out=att)
    att /= row_sums(att)


def _matmul(a, b, out):
    """One block: out = a @ b."""
    array_module(a).matmul(a, b, out=out)


def attention_backward(dy, cache):
    """Returns dqkv: (B, T, 3C) for dy: (B, T, C)."""
    xp = array_module(dy)
    q, k, v, att, att_d, drop_cache = cache
    B, nh, T, hs = q.shape
    dy = dy.reshape(B, T, nh, hs).transpose(0, 2, 1, 3).copy()   # (B, nh, T, hs)
    dq, dk, dv = dqkv = xp.empty((3, B, nh, T, hs), dtype=dy.dtype)
    datt = xp.empty_like(att)
    parallel_rows(_attention_output_backward, *_heads(datt, dy, v, att_d, dv))
    datt = dropout_backward(datt, drop_cache)
    parallel_rows(_attention_weights_backward, *_heads(datt, att, q, k, dq, dk), scale=1.0 / math.sqrt(hs))
    return dqkv.transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * nh * hs)   # (B, T, 3, nh, hs) -> (B, T, 3C)


def _attention_output_backward(datt, dy, v, att_d, dv):
    """One block of heads, y = att_d @ v in reverse: datt = dy v^T, dv = att_d^T dy."""
    xp = array_module(dy)
    xp.matmul(dy, v.transpose(0, 2, 1), out=datt)
    xp.matmul(att_d.transpose(0, 2, 1), dy, out=dv)


def _attention_weights_backward(ds, att, q, k, dq, dk, scale):
    """One block of heads: ds (datt on entry, in place) and then dq, dk.

    att = softmax(s): ds = att * (datt - sum(datt * att, row)); masked entries
    have att = 0, so they get no gradient. s = (q * scale) k^T, with the cached q
    already scaled: dk = ds^T (q * scale), dq = ds k * scale.
    """
    xp = array_module(ds)
    ds -= row_dots(ds, att)                       # sum(datt * att) over each row
    ds *= att
    xp.matmul(ds, k, out=dq)
    dq *= scale
    xp.matmul(ds.transpose(0, 2, 1), q, out=dk)

# ---------------------------------------------------------------- cross-entropy


def cross_entropy_forward(logits, targets, ignore_index=-1):
    """Mean softmax cross-entropy over the tokens whose target is not ignore_index.

    logits: (..., V); targets: (...) integers. Returns loss (0-d array, logits'
    dtype) and the cache (the softmax probabilities and the targets).
    """
    xp = array_module(logits)
    V = logits.shape[-1]
    z = logits.reshape(-1, V)                      # (N, V)
    probs = xp.empty(z.shape, dtype=z.dtype)
    logsumexp = xp.empty((z.shape[0], 1), dtype=z.dtype)
    parallel_rows(_softmax_rows, z, probs, logsumexp)
    t = targets.reshape(-1)
    valid = t != ignore_index
    t = xp.where(valid, t, 0)
    rows = xp.arange(t.shape[0])
    nll = logsumexp[:, 0] - z[rows, t]             # -log p(target) = log(sum exp z) - z_target
    count = xp.maximum(valid.sum(), 1).astype(logits.dtype)
    loss = (nll * valid).sum() / count
    return loss, (probs, t, valid, count, logits.shape)


def _softmax_rows(z, probs, logsumexp):
    """One block of rows: probs = softmax(z) and logsumexp = log(sum(exp(z)))."""
    xp = array_module(z)
    zmax = z.max(axis=-1, keepdims=True)
    xp.subtract(z, zmax, out=probs)                # shifted, so exp cannot overflow
    xp.exp(probs, out=probs)
    sums = probs.sum(axis=-1, keepdims=True)
    probs /= sums
    xp.log(sums, out=logsumexp)
    logsumexp += zmax


def cross_entropy_backward(dloss, cache):
    """Returns dlogits (..., V) = dloss * (softmax - onehot(target)) / count on valid rows."""
    probs, t, valid, count, shape = cache
    xp = array_module(probs)
    scale = (valid.astype(probs.dtype) * (dloss / count))[:, None]   # (N, 1)
    dlogits = xp.empty(probs.shape, dtype=probs.dtype)
    parallel_rows(_scale_rows, probs, scale, dlogits)
    rows = xp.arange(t.shape[0])
    dlogits[rows, t] -= scale[:, 0]                # the one-hot part, row by row
    return dlogits.reshape(shape)


def _scale_rows(a, scale, out):
    """One block of rows: out = a * scale, with one scale per row."""
    array_module(a).multiply(a, scale, out=out)
