"""Your GPT-2 layers: a forward and a backward for each, in plain NumPy.

Fill in every function below; each one now raises NotImplementedError. They
have the names and signatures of minigpt's own layers (minigpt/layers.py), so
that your functions can be plugged into minigpt's GPT.

    out, cache = X_forward(inputs...)       # cache: whatever your backward needs
    dinputs... = X_backward(dout, cache)    # gradients in the order of the inputs

Rules (the grader checks them):
  * Use NumPy (and math). Do not import minigpt here: a function that calls
    minigpt's code earns no points.
  * The cache is yours: keep in it what your backward needs, nothing more.
  * Leave inputs alone: never write into an input, into dout or into the cache
    (in a GPT the residual stream's gradient is shared, so `dout *= ...` changes
    another layer's gradient). Make new arrays.
  * Output dtype equals input dtype: float32 in, float32 out. Create arrays with
    `dtype=x.dtype` and write constants as Python floats (`math.sqrt`, not `np.sqrt`).
  * A backward returns one gradient per input of the forward that has one, in the
    forward's order; None for a bias that was None.

Check yourself as you go:
    python -m minigpt.coursework grade student_layers.py

Shape letters: B batch, T time, C channels, nh heads, hs = C // nh head size,
V vocabulary, N = B*T rows.
"""
import math  # noqa: F401 (yours to use)

import numpy as np  # noqa: F401


def embedding_forward(idx, wte, wpe):
    """Token plus position embedding: x[b, t] = wte[idx[b, t]] + wpe[t].

    idx: (B, T) integer token ids; wte: (V, C) token embeddings; wpe: (block_size, C)
    position embeddings, block_size >= T.
    Returns x: (B, T, C), and the cache (the ids and the two tables' shapes are enough).
    """
    raise NotImplementedError


def embedding_backward(dx, cache):
    """Gradients of the two tables for the upstream gradient dx: (B, T, C).

    Row v of dwte is the sum of dx over every position whose id is v; a token that
    appears twice adds both rows (`dwte[idx] += dx` keeps only one: use np.add.at).
    Row t of dwpe is the sum of dx over the batch at time t; rows t >= T are 0.
    Returns dwte: (V, C), dwpe: (block_size, C).
    """
    raise NotImplementedError


def linear_forward(x, w, b):
    """Affine map y = x @ w + b on the last axis.

    x: (..., in), 2-D (N, in) or 3-D (B, T, in); w: (in, out); b: (out,) or None
    (no bias). Returns y: (..., out), and the cache (what dx and dw need, and
    whether there was a bias).
    """
    raise NotImplementedError


def linear_backward(dy, cache):
    """Gradients for dy: (..., out), on the 2-D (N, in) view of x:

        dx = dy @ w^T,   dw = x^T @ dy,   db = dy summed over the rows.

    Returns dx: x's shape, dw: (in, out), db: (out,), or None when b was None.
    """
    raise NotImplementedError


def layernorm_forward(x, w, b, eps=1e-5):
    """Layer normalisation over the last axis, then scale and shift.

        mean = mean(x), var = mean((x - mean)^2)   (over the C channels of each row)
        xhat = (x - mean) / sqrt(var + eps),   out = xhat * w + b

    x: (..., C), any width C; w: (C,); b: (C,) or None; eps: the argument given.
    Returns out: x's shape, and the cache
    (x or xhat, w, and the row statistics, such as rstd = 1 / sqrt(var + eps)).
    """
    raise NotImplementedError


def layernorm_backward(dout, cache):
    """Gradients for dout: (..., C). x reaches xhat directly, through the mean and
    through the variance, so, with dxhat = dout * w and means over each row:

        dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
        dw = sum of dout * xhat over the rows,   db = sum of dout over the rows

    Returns dx: dout's shape, dw: (C,), db: (C,), or None when b was None.
    """
    raise NotImplementedError


def gelu_forward(x):
    """GELU, tanh approximation (as GPT-2), entry by entry:

        gelu(x) = 0.5 x (1 + tanh(u)),   u = sqrt(2/pi) (x + 0.044715 x^3)

    x: any shape. Returns out: x's shape, and the cache (x: recomputing tanh is cheap).
    """
    raise NotImplementedError


def gelu_backward(dout, cache):
    """dx = dout * gelu'(x), with t = tanh(u) and s = sqrt(2/pi):

        gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) s (1 + 3 * 0.044715 x^2)

    Returns dx: x's shape.
    """
    raise NotImplementedError


def dropout_forward(x, p, rng):
    """Inverted dropout: zero each entry with probability p, scale the rest by 1 / (1 - p).

    x: any shape; p: float in [0, 1); rng: a numpy Generator (draw the mask with it,
    e.g. rng.random(x.shape) >= p). With p == 0 or rng None it is the identity (no mask is
    drawn). Draw the mask with rng, never np.random: the same seed gives the same mask.
    Returns out: x's shape, every entry 0 or x / (1 - p), and the cache (the mask).
    """
    raise NotImplementedError


def dropout_backward(dout, cache):
    """dx = dout through the entries the forward kept, scaled by 1 / (1 - p); 0 where
    it dropped (the same mask: do not draw a new one). Returns dx: dout's shape."""
    raise NotImplementedError


def attention_forward(qkv, n_head, p_drop=0.0, rng=None):
    """Causal multi-head self-attention on a fused qkv projection.

    qkv: (B, T, 3C), q, k and v side by side on the last axis; split each into
    n_head heads of hs = C // n_head channels: (B, nh, T, hs). Per head:

        s = q k^T / sqrt(hs)                 (B, nh, T, T)
        s[t, u] = -inf for u > t             (position t sees only 0..t)
        att = softmax(s) over the last axis  (subtract each row's maximum before exp:
                                              scores can be large enough to overflow)
        dropped_att = dropout(att, p_drop, rng)
        y = dropped_att @ v                  (B, nh, T, hs)

    then merge the heads back side by side. Dropout on the weights is the dropout
    above: zero each weight with probability p_drop (draw the mask with rng, e.g.
    rng.random(att.shape) >= p_drop) and scale the rest by 1 / (1 - p_drop). With
    p_drop = 0 (the default) or rng None there is no dropout: dropped_att = att.
    Returns y: (B, T, C), and the cache: q, k, v, att, and the dropout mask (or
    dropped_att) when there was dropout, for the backward.
    """
    raise NotImplementedError


def attention_backward(dy, cache):
    """dqkv for dy: (B, T, C). Undo the forward line by line, last line first:

        y = dropped_att @ v:  ddropped = dy v^T,  dv = dropped_att^T dy
        dropout:              datt = ddropped through the forward's own mask (the one
                              in the cache, scaled by 1 / (1 - p_drop)); without
                              dropout datt = ddropped and dropped_att = att
        att = softmax(s):     ds = att * (datt - sum(datt * att, over each row))
        s = q k^T / sqrt(hs): dq = ds k / sqrt(hs),  dk = ds^T q / sqrt(hs)

    (masked entries have att = 0, so they get no gradient; the softmax line uses att,
    not dropped_att.) Returns dqkv: (B, T, 3C), dq, dk and dv side by side, heads
    merged as in the forward.
    """
    raise NotImplementedError


def cross_entropy_forward(logits, targets, ignore_index=-1):
    """Mean softmax cross-entropy over the positions whose target is not ignore_index.

        loss = mean over counted rows n of ( log sum_j exp(z[n, j]) - z[n, target[n]] )

    Subtract each row's maximum before exp, so large logits cannot overflow.
    logits: (..., V), 2-D (N, V) or 3-D (B, T, V); targets: logits' shape without V,
    integers, ignore_index marking a position that does not count (use the argument:
    it may be any integer, even a class id, not only -1).
    Returns loss: a 0-d array (logits' dtype), and the cache (the softmax
    probabilities, the targets and how many positions count).
    """
    raise NotImplementedError


def cross_entropy_backward(dloss, cache):
    """dlogits for the upstream gradient dloss (a number; 1 for the final loss):

        dlogits[n] = dloss * (softmax(z[n]) - onehot(target[n])) / count

    on counted rows (count: how many positions count, not all of them), 0 on
    ignored ones. Returns dlogits: logits' shape.
    """
    raise NotImplementedError
