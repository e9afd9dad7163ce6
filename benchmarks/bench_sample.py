"""KV cache against full recompute: time to generate N tokens, side by side.

    python benchmarks/bench_sample.py                      # 256 tokens, shakespeare_char size
    python benchmarks/bench_sample.py --repeats 7 --reference

The model is the shakespeare_char size (6 layers, 6 heads, 384 wide, block
256, 65-token vocabulary) with random weights: speed does not depend on what
the weights are. Each repeat times both paths back to back (alternating which
goes first), from a 1-token prompt, greedy, so both do exactly the same work
and must produce the same tokens. Reports medians and the ratio.

BLAS threads matter: on a busy machine, multi-threaded BLAS makes the small
matrix-vector products of a cached step wait on each other. Pin them to
compare like with like:  OPENBLAS_NUM_THREADS=1 python benchmarks/bench_sample.py

--reference also times Hugging Face transformers' GPT2LMHeadModel.generate
(PyTorch, same weights, use_cache on and off), when transformers is installed.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minigpt.model import GPT, GPTConfig   # noqa: E402
from minigpt.sample import generate        # noqa: E402


def time_minigpt(model, prompt, tokens, use_cache):
    t0 = time.perf_counter()
    out = generate(model, prompt, tokens, temperature=0.0, use_cache=use_cache)
    return time.perf_counter() - t0, out


def reference_timer(model, prompt, tokens):
    """A function (use_cache) -> seconds for transformers' generate, or None if not installed."""
    try:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    cfg = model.config
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size,
                                    n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
                                    bos_token_id=None, eos_token_id=None))
    state = {"transformer." + k: torch.from_numpy(np.array(v)) for k, v in model.params.items()}
    hf.load_state_dict(state, strict=False)
    hf.eval()
    ids = torch.from_numpy(prompt)

    def run(use_cache):
        t0 = time.perf_counter()
        with torch.no_grad():
            hf.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                        use_cache=use_cache, pad_token_id=0)
        return time.perf_counter() - t0
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=256, help="tokens to generate (default 256)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of each path (default 5)")
    p.add_argument("--n-layer", type=int, default=6, help="transformer blocks (default 6)")
    p.add_argument("--n-head", type=int, default=6, help="attention heads (default 6)")
    p.add_argument("--n-embd", type=int, default=384, help="width (default 384)")
    p.add_argument("--block-size", type=int, default=256, help="context length (default 256)")
    p.add_argument("--vocab-size", type=int, default=65, help="vocabulary (default 65)")
    p.add_argument("--reference", action="store_true", help="also time transformers' generate")
    args = p.parse_args(argv)

    config = GPTConfig(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd)
    model = GPT(config, seed=0)
    prompt = np.zeros((1, 1), dtype=np.int64)
    print(f"minigpt generate, {args.tokens} tokens from a 1-token prompt, greedy: {args.n_layer} "
          f"layers, {args.n_embd} wide, block {args.block_size}, vocab {args.vocab_size}, "
          f"{model.num_params() / 1e6:.2f}M params, float32, CPU, {args.repeats} repeats, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}", flush=True)
    generate(model, prompt, 8, temperature=0.0)    # warm up BLAS and the allocator
    times = {"cache": [], "full": []}
    same = True
    for r in range(args.repeats):
        order = ["cache", "full"] if r % 2 == 0 else ["full", "cache"]
        outs = {}
        for name in order:
            t, outs[name] = time_minigpt(model, prompt, args.tokens, use_cache=(name == "cache"))
            times[name].append(t)
        same &= bool(np.array_equal(outs["cache"], outs["full"]))
    rows = [("minigpt, KV cache", times["cache"]), ("minigpt, full recompute", times["full"])]
    ref = reference_timer(model, prompt, args.tokens) if args.reference else None
    if args.reference and ref is None:
        print("(transformers is not installed: no reference timings)")
    if ref is not None:
        hf = {True: [], False: []}
        for r in range(args.repeats):
            for use_cache in ([True, False] if r % 2 == 0 else [False, True]):
                hf[use_cache].append(ref(use_cache))
        rows += [("transformers (PyTorch), use_cache", hf[True]),
                 ("transformers (PyTorch), no cache", hf[False])]
    print(f"{'':36s} {'median s':>9s} {'tokens/s':>9s}   (all runs, s)")
    for name, ts in rows:
        med = statistics.median(ts)
        print(f"{name:36s} {med:9.3f} {args.tokens / med:9.0f}   "
              + " ".join(f"{t:.3f}" for t in ts))
    ratios = [f / c for f, c in zip(times["full"], times["cache"])]
    print(f"speed-up of the KV cache: {statistics.median(times['full']) / statistics.median(times['cache']):.1f}x "
          f"(ratio of medians; per-repeat ratios {min(ratios):.1f}x to {max(ratios):.1f}x)")
    print(f"identical tokens with and without the cache: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
