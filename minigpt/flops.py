"""How much arithmetic a training step is, and how much this machine can do.

    from minigpt.flops import flops_per_token, measure_matmul_peak
    achieved = tokens_per_second * flops_per_token(config)       # FLOP/s
    mfu = achieved / (measure_matmul_peak() * 1e9)                # model FLOPs utilisation

The count is the one in the PaLM paper's appendix B (and nanoGPT's
`estimate_mfu`): a forward and backward pass costs 6 FLOPs per parameter per
token (2 in the forward matmul, 4 in the two backward matmuls), plus the
attention matmuls q k^T and att v, which have no parameters:

    flops_per_token = 6 N + 12 n_layer n_embd T

N counts every weight used in a matmul: all parameters except the position
embedding, which is only looked up (the token embedding counts, since the
tied output head multiplies by it). LayerNorm, GELU, softmax and AdamW are
not counted; they are a few FLOPs per element, not per weight.
"""
import math
import os
import time

import numpy as np


def matmul_params(config):
    """N: the parameters that take part in a matmul (all but the position embedding)."""
    from .model import param_shapes
    return sum(math.prod(s) for name, s in param_shapes(config).items() if name != "wpe.weight")


def flops_per_token(config, T=None):
    """Training FLOPs (forward + backward) per token for sequences of length T (default block_size)."""
    T = config.block_size if T is None else T
    attention = 12 * config.n_layer * config.n_embd * T      # 12 L H Q T with H Q = n_embd
    return 6 * matmul_params(config) + attention


def measure_matmul_peak(seconds=0.3, n=1024):
    """The host's float32 matmul speed in GFLOP/s: the best of repeated (n, n) @ (n, n) products.

    NumPy's `@`, BLAS on every core, as minigpt's layers multiply; repeated for
    `seconds` and the single best time counts, so a busy machine reads closer to
    its real peak.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b                                                     # warm up threads and caches
    best = math.inf
    stop = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() >= stop:
            break
    return 2.0 * n ** 3 / best / 1e9


def step_bytes(config, batch_size):
    """A generous estimate of one training step's memory in bytes: the float32 activations
    the backward pass keeps (about 20 (B, T, C) arrays and 2 (B, nh, T, T) per layer, 3 (B, T, V)
    for the logits) plus weights, gradients and the two AdamW moments (16 bytes a parameter)."""
    B, T, C, L, V = batch_size, config.block_size, config.n_embd, config.n_layer, config.vocab_size
    params = 12 * L * C * C + (V + T) * C
    return 4 * (B * T * (20 * C * L + 3 * V) + 2 * L * B * config.n_head * T * T) + 16 * params


def physical_memory():
    """Bytes of RAM in this machine (os.sysconf), or None where it cannot be told."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
