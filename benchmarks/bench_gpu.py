"""GPU training speed: minigpt on CuPy beside PyTorch eager on CUDA, same model, same run.

    python benchmarks/bench_gpu.py                    # shakespeare_char model, batch 64, strict float32
    python benchmarks/bench_gpu.py --tf32             # both frameworks allowed TF32 matmuls
    python benchmarks/bench_gpu.py --no-fused --no-torch   # minigpt without its fused GPU kernels

The model is the shakespeare_char recipe (6 layers, 6 heads, 384 wide, block
256, vocab 65, dropout 0.2). A step is forward, backward, gradient clipping
and AdamW. Both frameworks start from the same parameters and batch, and the
rounds alternate between them so clock changes hit both alike. Reported: the
median tokens/s of each, and the ratio. Needs CuPy and a CUDA GPU; PyTorch is
optional (minigpt alone is timed without it).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from minigpt import backend  # noqa: E402
from minigpt.backend import enable_tf32, resolve_device, DeviceError  # noqa: E402
from minigpt.model import GPT, GPTConfig  # noqa: E402
from minigpt.optim import AdamW, clip_grad_norm  # noqa: E402

HYPER = dict(lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)


def minigpt_step(config, B, seed):
    import cupy
    model = GPT(config, seed=seed).to("cuda")
    opt = AdamW(model.params, **HYPER)
    rng = np.random.default_rng(seed)
    idx = cupy.asarray(rng.integers(0, config.vocab_size, size=(B, config.block_size)))
    targets = cupy.asarray(rng.integers(0, config.vocab_size, size=(B, config.block_size)))
    drop_rng = cupy.random.default_rng(seed)

    def step():
        _, loss, cache = model.forward(idx, targets, train=True, rng=drop_rng)
        grads = model.backward(cache)
        clip_grad_norm(grads, 1.0)
        opt.step(grads)
        return loss

    def sync():
        cupy.cuda.get_current_stream().synchronize()
    return step, sync


def torch_step(config, B, seed):
    import torch
    from torch_gpt2 import TorchGPT, make_adamw
    params = GPT(config, seed=seed).params
    model = TorchGPT(config).load_minigpt_params(params).cuda().train()
    opt = make_adamw(model, **HYPER)
    rng = np.random.default_rng(seed)
    idx = torch.as_tensor(rng.integers(0, config.vocab_size, size=(B, config.block_size))).cuda()
    targets = torch.as_tensor(rng.integers(0, config.vocab_size, size=(B, config.block_size))).cuda()

    def step():
        _, loss = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss
    return step, torch.cuda.synchronize


def time_round(step, sync, n):
    sync()
    t = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return (time.perf_counter() - t) / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-size", type=int, default=64, help="sequences per step")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per framework, alternating")
    ap.add_argument("--steps", type=int, default=10, help="steps per round")
    ap.add_argument("--tf32", action="store_true",
                    help="TF32 tensor-core matmuls in both frameworks: faster, their inputs rounded to a "
                         "10-bit mantissa (default: strict float32)")
    ap.add_argument("--no-fused", action="store_true",
                    help="minigpt without its fused GPU kernels (GELU, AdamW): one launch per NumPy-style line")
    ap.add_argument("--no-torch", action="store_true", help="time minigpt alone")
    args = ap.parse_args(argv)
    try:
        resolve_device("cuda")
    except DeviceError as e:
        print(f"bench_gpu: {e}", file=sys.stderr)
        return 2
    config = GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2)
    tokens = args.batch_size * config.block_size
    if args.tf32:
        enable_tf32()
    if args.no_fused:
        backend.fused_gpu_kernels = lambda: {}      # parallel_rows then runs the NumPy-style kernels
    runners = {"minigpt": minigpt_step(config, args.batch_size, 0)}
    if not args.no_torch:
        try:
            import torch
            torch.backends.cuda.matmul.allow_tf32 = args.tf32
            torch.backends.cudnn.allow_tf32 = args.tf32
            runners["pytorch"] = torch_step(config, args.batch_size, 0)
        except ImportError:
            print("(torch not installed: minigpt alone)")
    for step, sync in runners.values():          # warm-up: kernels compiled, pools grown
        time_round(step, sync, 3)
    times = {k: [] for k in runners}
    for _ in range(args.rounds):
        for name, (step, sync) in runners.items():
            times[name].append(time_round(step, sync, args.steps))
    print(f"GPU training step, 6L/6H/384, block 256, batch {args.batch_size}, "
          f"{'TF32' if args.tf32 else 'strict float32'}"
          f"{', minigpt without its fused kernels' if args.no_fused else ''}")
    print(f"{'':<8} {'tokens/s':>10} {'ms/step':>8}")
    rate = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rate[name] = tokens / med
        print(f"{name:<8} {rate[name]:>10,.0f} {1000 * med:>8.1f}")
    if "pytorch" in rate:
        print(f"ratio minigpt / pytorch: {rate['minigpt'] / rate['pytorch']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
