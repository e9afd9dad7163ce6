"""Every forward and every backward returns zeros of the right shape and dtype: it earns nothing."""
import numpy as np


def embedding_forward(idx, wte, wpe):
    return np.zeros(idx.shape + wte.shape[1:], dtype=wte.dtype), (wte, wpe)


def embedding_backward(dx, cache):
    return np.zeros_like(cache[0]), np.zeros_like(cache[1])


def linear_forward(x, w, b):
    return np.zeros(x.shape[:-1] + w.shape[1:], dtype=x.dtype), (x, w, b)


def linear_backward(dy, cache):
    x, w, b = cache
    return np.zeros_like(x), np.zeros_like(w), None if b is None else np.zeros_like(b)


def layernorm_forward(x, w, b, eps=1e-5):
    return np.zeros_like(x), (x, w, b)


def layernorm_backward(dout, cache):
    x, w, b = cache
    return np.zeros_like(x), np.zeros_like(w), None if b is None else np.zeros_like(b)


def gelu_forward(x):
    return np.zeros_like(x), x


def gelu_backward(dout, cache):
    return np.zeros_like(cache)


def dropout_forward(x, p, rng):
    return np.zeros_like(x), x


def dropout_backward(dout, cache):
    return np.zeros_like(cache)


def attention_forward(qkv, n_head, p_drop=0.0, rng=None):
    B, T, C3 = qkv.shape
    return np.zeros((B, T, C3 // 3), dtype=qkv.dtype), qkv


def attention_backward(dy, cache):
    return np.zeros_like(cache)


def cross_entropy_forward(logits, targets, ignore_index=-1):
    return np.zeros((), dtype=logits.dtype), logits


def cross_entropy_backward(dloss, cache):
    return np.zeros_like(cache)
