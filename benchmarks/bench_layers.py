"""Per-layer speed: minigpt's LayerNorm, GELU and attention beside PyTorch's, one call at a time.

    python benchmarks/bench_layers.py                 # the shapes of configs A and B
    python benchmarks/bench_layers.py --configs A --repeats 500

Where bench_train.py says how a whole training step compares, this says which
layers make the difference. Each line is the median time of one call in
milliseconds, on the activations of one block of config A (batch 12, block 64,
4 heads, 128 wide) or B (batch 8, block 256, 6 heads, 384 wide), float32,
all cores for each; layer by layer, minigpt then PyTorch. PyTorch is optional.
"""
import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402  (NumPy first, as users do)

from minigpt import layers as L  # noqa: E402

# name: (batch, block, heads, width), as in bench_train.py
CONFIGS = {"A": (12, 64, 4, 128), "B": (8, 256, 6, 384)}
V = 65                                             # vocabulary of configs A and B


def median_ms(fn, repeats):
    """Median wall time of fn() in ms, after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def minigpt_calls(B, T, nh, C, rng):
    """{layer: a no-argument call} for minigpt, on random activations of one block."""
    def r(*shape):
        return rng.standard_normal(shape, dtype=np.float32)
    x, dx, w, b = r(B * T, C), r(B * T, C), np.ones(C, np.float32), np.zeros(C, np.float32)
    h, dh = r(B * T, 4 * C), r(B * T, 4 * C)
    qkv, dy = r(B, T, 3 * C), r(B, T, C)
    _, ln_cache = L.layernorm_forward(x, w, b)
    _, gelu_cache = L.gelu_forward(h)
    logits, targets = r(B, T, V), rng.integers(0, V, (B, T))
    return {
        "LayerNorm forward": lambda: L.layernorm_forward(x, w, b),
        "LayerNorm backward": lambda: L.layernorm_backward(dx, ln_cache),
        "GELU forward": lambda: L.gelu_forward(h),
        "GELU backward": lambda: L.gelu_backward(dh, gelu_cache),
        "attention forward": lambda: L.attention_forward(qkv, nh),
        "attention forward + backward": lambda: L.attention_backward(dy, L.attention_forward(qkv, nh)[1]),
        "cross-entropy forward + backward": lambda: L.cross_entropy_backward(
            1.0, L.cross_entropy_forward(logits, targets)[1]),
    }


def torch_calls(B, T, nh, C, rng, torch):
    """The same layers in PyTorch eager: aten's LayerNorm and GELU, and causal SDPA as in torch_gpt2.py."""
    import torch.nn.functional as F

    def r(*shape):
        return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    x, dx, w, b = r(B * T, C), r(B * T, C), torch.ones(C), torch.zeros(C)
    h, dh = r(B * T, 4 * C), r(B * T, 4 * C)
    qkv, dy = r(B, T, 3 * C), r(B, T, C)
    _, mean, rstd = torch.ops.aten.native_layer_norm(x, [C], w, b, 1e-5)
    hs = C // nh
    logits, targets = r(B, T, V), torch.from_numpy(rng.integers(0, V, (B, T)))

    def cross_entropy():
        z = logits.clone().requires_grad_(True)
        F.cross_entropy(z.view(-1, V), targets.view(-1)).backward()
        return z.grad

    def attention(grad):
        t = qkv.clone().requires_grad_(grad)
        q, k, v = (a.view(B, T, nh, hs).transpose(1, 2) for a in t.split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        if grad:
            y.backward(dy)
        return y
    return {
        "LayerNorm forward": lambda: torch.ops.aten.native_layer_norm(x, [C], w, b, 1e-5),
        "LayerNorm backward": lambda: torch.ops.aten.native_layer_norm_backward(
            dx, x, [C], mean, rstd, w, b, [True, True, True]),
        "GELU forward": lambda: F.gelu(h, approximate="tanh"),
        "GELU backward": lambda: torch.ops.aten.gelu_backward(dh, h, approximate="tanh"),
        "attention forward": lambda: attention(False),
        "attention forward + backward": lambda: attention(True),
        "cross-entropy forward + backward": lambda: cross_entropy(),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS),
                   help="which block shapes to time")
    p.add_argument("--repeats", type=int, default=200, help="timed calls per layer and framework")
    p.add_argument("--no-torch", action="store_true", help="time minigpt alone")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="threads for each framework (default: all cores); 1 is steadier on a busy machine")
    args = p.parse_args(argv)
    from minigpt.backend import host_threads
    host_threads(args.threads)
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    print(f"median ms per call, {args.repeats} calls, {args.threads} threads each; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for name in args.configs:
        B, T, nh, C = CONFIGS[name]
        rng = np.random.default_rng(0)
        mine = minigpt_calls(B, T, nh, C, rng)
        theirs = torch_calls(B, T, nh, C, rng, torch) if torch else {}
        print(f"\nconfig {name}: batch {B}, block {T}, {nh} heads, {C} wide")
        print(f"{'layer':<30}{'minigpt':>10}" + (f"{'PyTorch':>10}{'ratio':>8}" if torch else ""))
        for layer, call in mine.items():
            ms = median_ms(call, args.repeats)
            line = f"{layer:<30}{ms:>10.3f}"
            if layer in theirs:
                ref = median_ms(theirs[layer], args.repeats)
                line += f"{ref:>10.3f}{ms / ref:>7.1f}x"
            print(line)


if __name__ == "__main__":
    main()
