"""Training speed: minigpt beside PyTorch eager on the CPU, same model, same step, same run.

    python benchmarks/bench_train.py                  # configs A, B, C
    python benchmarks/bench_train.py --configs A B --rounds 8
    python benchmarks/bench_train.py --no-torch       # minigpt alone
    python benchmarks/bench_train.py --import-order   # also minigpt imported before NumPy
    python benchmarks/bench_train.py --busy 1         # beside one busy-looping process
    python benchmarks/bench_train.py --same-process   # also both frameworks in one process
    python benchmarks/bench_train.py --variant OPENBLAS_THREAD_TIMEOUT=4   # also minigpt with this setting

A step is a full training step in float32: forward, backward, AdamW. Each
framework runs in its own worker process (so each has its own peak RSS and
threads), both built from the same initial parameters and the same batch;
the parent alternates rounds of steps between them, so a busy machine slows
both alike. Reported: the median tokens/s and ms per step, the achieved
GFLOP/s (minigpt.flops: 6N + attention per token) and its share of the
measured matmul peak (MFU), the peak RSS of each worker (whole process, and
above the process's RSS before the model was built), and where minigpt's
time goes by layer kind.

Each worker imports NumPy first and minigpt after it, as a notebook does.
--import-order adds a third worker, "minigpt-first", that imports minigpt
before NumPy (as `python -m minigpt.train` does), alternated with the others:
the two minigpt rows should match. --busy N starts N processes that spin on
a core for the whole run, as a browser tab might on a laptop.
--same-process adds one more worker that imports NumPy, torch and minigpt and
builds both models, as a notebook comparing the two would; the parent
alternates rounds of the two frameworks inside it. --variant NAME=VALUE adds a
minigpt worker whose environment has NAME=VALUE (a setting to compare, side by
side with the default one); MINIGPT_BENCH_CODE=DIR makes that worker time the
minigpt package of another checkout DIR, to compare two versions of the code.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# MINIGPT_BENCH_CODE: time the minigpt of another checkout (e.g. --variant MINIGPT_BENCH_CODE=../old)
sys.path.insert(0, os.environ.get("MINIGPT_BENCH_CODE") or str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
USER_ENV = dict(os.environ)          # before minigpt sets OPENBLAS_THREAD_TIMEOUT: what workers get
if "--import-minigpt-first" in sys.argv:           # the "minigpt-first" worker
    import minigpt  # noqa: E402,F401
import numpy as np  # noqa: E402  (NumPy first, as users do)
import minigpt  # noqa: E402,F401

# name: (model sizes, batch size, default rounds, steps per round)
CONFIGS = {
    "A": (dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65), 12, 10, 10),
    "B": (dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65), 8, 6, 2),
    "C": (dict(n_layer=12, n_head=12, n_embd=768, block_size=256, vocab_size=50257), 2, 4, 1),
}
HYPER = dict(lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def rss_mb():
    """The process's resident memory now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def threads():
    """Threads per framework: --threads, passed to the workers in MINIGPT_BENCH_THREADS, else all cores."""
    return int(os.environ.get("MINIGPT_BENCH_THREADS") or len(os.sched_getaffinity(0)))


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux

# ------------------------------------------------------------------ workers


def minigpt_worker(config, B, seed):
    """Build minigpt's model, optimizer and batch; return (step, profile) functions."""
    from minigpt.backend import host_threads
    from minigpt.model import GPT
    from minigpt.optim import AdamW
    host_threads(threads())
    model = GPT(config, seed=seed)
    opt = AdamW(model.params, **HYPER)
    idx, targets = batch(config, B, seed)

    def step():
        _, loss, cache = model.forward(idx, targets, train=True)
        opt.step(model.backward(cache))
        return loss

    def profile(n):
        return profile_minigpt(step, n)
    return step, profile


def torch_worker(config, B, seed, adamw):
    """The same model in PyTorch (benchmarks/torch_gpt2.py), loaded with minigpt's initial params."""
    import torch

    from minigpt.model import init_params
    from torch_gpt2 import TorchGPT, make_adamw
    torch.set_num_threads(threads())
    model = TorchGPT(config).load_minigpt_params(init_params(config, seed))
    kwargs = {"foreach": True} if adamw == "foreach" else {"fused": True} if adamw == "fused" else {}
    opt = make_adamw(model, **HYPER, **kwargs)
    idx, targets = (torch.from_numpy(a) for a in batch(config, B, seed))

    def step():
        opt.zero_grad(set_to_none=True)
        _, loss = model(idx, targets)
        loss.backward()
        opt.step()
        return loss.detach()
    return step, None


def batch(config, B, seed):
    rng = np.random.default_rng(seed + 1)
    shape = (B, config.block_size)
    return rng.integers(0, config.vocab_size, shape), rng.integers(0, config.vocab_size, shape)


def profile_minigpt(step, n):
    """Run n steps with a timer around every layer call; return {kind: seconds} and the total.

    The timers wrap the module attributes the model calls through (`L.gelu_forward`, ...),
    so the layers themselves are untouched; "other" is the step time nobody claimed
    (embedding, residual adds, dropout, Python).
    """
    from minigpt import layers as L
    from minigpt.model import GPT
    from minigpt.optim import AdamW
    kinds = {
        "matmul": [(L, "linear_forward"), (L, "linear_backward"),
                   (GPT, "_head_forward"), (GPT, "_head_backward")],
        "attention": [(L, "attention_forward"), (L, "attention_backward")],
        "GELU": [(L, "gelu_forward"), (L, "gelu_backward")],
        "LayerNorm": [(L, "layernorm_forward"), (L, "layernorm_backward")],
        "cross-entropy": [(L, "cross_entropy_forward"), (L, "cross_entropy_backward")],
        "optimizer": [(AdamW, "step")],
    }
    spent = defaultdict(float)
    saved = []
    for kind, targets in kinds.items():
        for owner, name in targets:
            fn = getattr(owner, name, None)
            if fn is None:
                continue

            def timed(*args, _fn=fn, _kind=kind, **kwargs):
                t0 = time.perf_counter()
                out = _fn(*args, **kwargs)
                spent[_kind] += time.perf_counter() - t0
                return out
            saved.append((owner, name, fn))
            setattr(owner, name, timed)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        total = time.perf_counter() - t0
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
    spent["other"] = total - sum(spent.values())
    return dict(spent), total


def blas_spin_ms(idle_s=0.05, repeats=5):
    """CPU ms the process burns while its main thread sleeps idle_s right after a matrix product.

    That is BLAS's idle threads spinning (OpenBLAS's default: ~0.1 s); the
    median of `repeats`. Near 0 once OPENBLAS_THREAD_TIMEOUT has taken effect.
    """
    a = np.ones((512, 512), np.float32)
    spins = []
    for _ in range(repeats):
        a @ a
        c0 = time.process_time()
        time.sleep(idle_s)
        spins.append(1e3 * (time.process_time() - c0))
    return float(np.median(spins))


def worker_main(args):
    """Serve the parent: one JSON command per stdin line, one JSON answer per stdout line."""
    from minigpt.model import GPTConfig
    sizes, B, _, _ = CONFIGS[args.config]
    config = GPTConfig(**sizes)
    # The baseline is taken after the libraries are loaded and have run one matmul
    # (BLAS allocates its per-thread buffers then): what is left is the model's.
    if args.worker in ("torch", "both"):
        import torch
        torch.set_num_threads(threads())
        torch.ones(256, 256) @ torch.ones(256, 256)
    if args.worker != "torch":
        np.ones((256, 256), np.float32) @ np.ones((256, 256), np.float32)
    base = rss_mb()
    steps, profile = {}, None                      # framework: step function; minigpt's profiler
    if args.worker in ("minigpt", "both"):
        steps["minigpt"], profile = minigpt_worker(config, B, args.seed)
    if args.worker in ("torch", "both"):
        steps["torch"], _ = torch_worker(config, B, args.seed, args.torch_adamw)
    out = sys.stdout
    sys.stdout = sys.stderr                       # nothing but answers on the pipe
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "steps":
            step = steps[cmd.get("which") or next(iter(steps))]
            times, cpu = [], []
            for _ in range(cmd["n"]):
                t0, c0 = time.perf_counter(), time.process_time()
                loss = float(step())
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            answer = {"times": times, "cpu": cpu, "loss": loss}
        elif cmd["cmd"] == "peak":
            from minigpt.flops import measure_matmul_peak
            answer = {"gflops": measure_matmul_peak(seconds=cmd["seconds"])}
        elif cmd["cmd"] == "spin":
            answer = {"spin_ms": blas_spin_ms()}
        elif cmd["cmd"] == "profile":
            spent, total = profile(cmd["n"])
            answer = {"spent": spent, "total": total}
        else:                                     # "memory"
            answer = {"peak": peak_rss_mb(), "base": base}
        out.write(json.dumps(answer) + "\n")
        out.flush()

# ------------------------------------------------------------------ parent


class Worker:
    def __init__(self, kind, config_name, args):
        worker = {"torch": "torch", "together": "both"}.get(kind, "minigpt")
        cmd = [sys.executable, __file__, "--worker", worker,
               "--config", config_name, "--seed", str(args.seed), "--torch-adamw", args.torch_adamw]
        if kind == "minigpt-first":
            cmd.append("--import-minigpt-first")
        self.kind = kind
        env = dict(USER_ENV)
        if kind.startswith("minigpt "):            # a --variant: "minigpt NAME=VALUE"
            name, _, value = kind.split(" ", 1)[1].partition("=")
            env[name] = value
        if args.threads:                           # BLAS and OpenMP read these when they load
            for var in ("MINIGPT_BENCH_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = str(args.threads)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.kind} worker died (see its stderr above)")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def bench_config(name, args, with_torch):
    from minigpt.flops import flops_per_token
    from minigpt.model import GPTConfig
    sizes, B, rounds, steps = CONFIGS[name]
    rounds = args.rounds or rounds
    steps = args.steps or steps
    config = GPTConfig(**sizes)
    tokens = B * config.block_size
    kinds = ["minigpt"] + (["torch"] if with_torch else []) + (["minigpt-first"] if args.import_order else [])
    kinds += [f"minigpt {v}" for v in args.variant]
    workers = {k: Worker(k, name, args) for k in kinds}
    if args.same_process and with_torch:           # two kinds, one process: who runs is in the command
        together = Worker("together", name, args)
        kinds += ["minigpt, torch imported", "torch, minigpt imported"]
        workers.update({"minigpt, torch imported": together, "torch, minigpt imported": together})
    which = {"minigpt, torch imported": "minigpt", "torch, minigpt imported": "torch"}
    try:
        times = {k: [] for k in kinds}
        cpu = {k: [] for k in kinds}
        losses = {}
        for k in kinds:                            # warm-up: caches, allocator, BLAS threads
            losses[k] = workers[k].ask(cmd="steps", n=args.warmup, which=which.get(k))["loss"]
        for r in range(rounds):                    # alternate, and swap who goes first
            for k in (kinds if r % 2 == 0 else kinds[::-1]):
                answer = workers[k].ask(cmd="steps", n=steps, which=which.get(k))
                times[k] += answer["times"]
                cpu[k] += answer["cpu"]
        prof = workers["minigpt"].ask(cmd="profile", n=max(1, steps)) if args.profile else None
        memory = {k: workers[k].ask(cmd="memory") for k in kinds}
        peak_gflops = workers["minigpt"].ask(cmd="peak", seconds=1.0)["gflops"]
        spin = {k: workers[k].ask(cmd="spin")["spin_ms"] for k in kinds
                if k.startswith("minigpt") and k not in which}
    finally:
        for w in set(workers.values()):
            w.close()
    fpt = flops_per_token(config)
    result = {"config": name, "B": B, "T": config.block_size, "tokens": tokens, "losses": losses,
              "profile": prof, "memory": memory, "spin_ms": spin, "flops_per_token": fpt, "peak_gflops": peak_gflops}
    for k in kinds:
        ms = 1e3 * float(np.median(times[k]))
        result[k] = {"ms": ms, "tok_s": tokens / ms * 1e3, "gflops": tokens / ms * 1e3 * fpt / 1e9,
                     "spread": [1e3 * float(np.percentile(times[k], q)) for q in (25, 75)],
                     "n": len(times[k]), "cpu_ms": 1e3 * float(np.median(cpu[k]))}
        result[k]["mfu"] = result[k]["gflops"] / peak_gflops
    return result


def busy_loop():
    """A process that keeps one core busy until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def environment(with_torch, n_threads):
    n_threads = n_threads or len(os.sched_getaffinity(0))
    lines = [f"date {datetime.now().isoformat(timespec='minutes')}, {platform.machine()} "
             f"{_cpu_name()}, {len(os.sched_getaffinity(0))} cores, load average "
             f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}",
             f"python {platform.python_version()}, numpy {np.__version__}" + _blas_info()
             + f"; {n_threads} threads per framework"]
    if with_torch:
        from importlib.metadata import version
        lines.append(f"torch {version('torch')} eager, float32, torch.optim.AdamW")
    flags = {k: USER_ENV[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
                                        "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT") if k in USER_ENV}
    lines.append(f"environment: {flags or 'no BLAS/OpenMP variables set'}")
    return lines


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ""
    info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return "".join(f", {i['internal_api']} {i.get('version')} ({i.get('architecture')} kernel, "
                   f"{i['num_threads']} threads)" for i in info)


def report(results, with_torch):
    """Print the speed table, the memory table and the profile."""
    both = ["minigpt", "torch"] if with_torch else ["minigpt"]
    print("\nspeed (float32 train step: forward, backward, AdamW)")
    head = f"{'cfg':<4}{'tokens/s':>10}" + (f"{'PyTorch':>10}{'ratio':>8}" if with_torch else "")
    head += f"{'ms/step':>10}" + (f"{'PyTorch':>10}" if with_torch else "")
    head += f"{'CPU ms/step':>13}" + (f"{'PyTorch':>10}" if with_torch else "")
    print(head + f"{'GFLOP/s':>9}{'MFU':>6}")
    for r in results:
        m = r["minigpt"]
        line = f"{r['config']:<4}{m['tok_s']:>10.0f}"
        if with_torch:
            line += f"{r['torch']['tok_s']:>10.0f}{m['tok_s'] / r['torch']['tok_s']:>7.2f}x"
        line += "".join(f"{r[k]['ms']:>10.1f}" for k in both)
        line += f"{m['cpu_ms']:>13.1f}" + ("".join(f"{r[k]['cpu_ms']:>10.1f}" for k in both[1:]))
        print(line + f"{m['gflops']:>9.1f}{100 * m['mfu']:>5.0f}%")
    peaks = ", ".join(f"{r['peak_gflops']:.0f}" for r in results)
    print(f"tokens/s, ms/step: medians over all timed steps; CPU ms/step: process CPU time (all threads);\n"
          f"GFLOP/s: minigpt's achieved, 6N + attention per token (minigpt.flops); MFU: against the\n"
          f"float32 matmul peak measured in each minigpt worker ({peaks} GFLOP/s)")

    ordered = [r for r in results if "minigpt-first" in r]
    if ordered:
        print("\nimport order (minigpt's ms/step, median; the same worker code, alternated; spin: CPU ms\n"
              "burnt in the 50 ms after a matrix product while the process is idle, BLAS threads spinning)")
        print(f"{'cfg':<4}{'numpy first':>13}{'minigpt first':>15}{'ratio':>8}{'spin, numpy first':>20}"
              f"{'minigpt first':>15}")
        for r in ordered:
            a, b = r["minigpt"]["ms"], r["minigpt-first"]["ms"]
            print(f"{r['config']:<4}{a:>13.1f}{b:>15.1f}{b / a:>7.2f}x{r['spin_ms']['minigpt']:>17.1f} ms"
                  f"{r['spin_ms']['minigpt-first']:>12.1f} ms")

    together = [r for r in results if "minigpt, torch imported" in r]
    if together:
        print("\none process, NumPy, torch and minigpt all imported (a notebook comparing the two),\n"
              "the two frameworks alternated inside it; separate processes beside it for reference")
        print(f"{'cfg':<4}{'minigpt ms':>12}{'PyTorch ms':>12}{'ratio':>8}{'separate: ratio':>17}")
        for r in together:
            a, b = r["minigpt, torch imported"]["ms"], r["torch, minigpt imported"]["ms"]
            print(f"{r['config']:<4}{a:>12.1f}{b:>12.1f}{b / a:>7.2f}x{r['torch']['ms'] / r['minigpt']['ms']:>16.2f}x")

    variants = [k for k in (results[0] if results else {}) if k.startswith("minigpt ")]
    if variants:
        print("\nminigpt with a changed setting (--variant), alternated with the default worker")
        print(f"{'cfg':<4}{'default ms':>12}" + "".join(f"  {v[8:]:>30}" for v in variants))
        for r in results:
            a = r["minigpt"]["ms"]
            print(f"{r['config']:<4}{a:>12.1f}" + "".join(
                f"{r[v]['ms']:>24.1f} ({a / r[v]['ms']:.2f}x)" for v in variants))

    print("\npeak RSS, MiB: whole process / above the RSS after loading the libraries and one matmul")
    print(f"{'cfg':<4}{'minigpt':>16}" + (f"{'PyTorch':>16}" if with_torch else ""))
    for r in results:
        print(f"{r['config']:<4}" + "".join(
            f"{r['memory'][k]['peak']:>9.0f} /{r['memory'][k]['peak'] - r['memory'][k]['base']:>5.0f}"
            for k in both))

    profiled = [r for r in results if r["profile"]]
    if profiled:
        kinds = ["matmul", "attention", "GELU", "LayerNorm", "cross-entropy", "optimizer", "other"]
        print("\nminigpt's step by layer kind (share of wall time; matmul = linears + tied head; "
              "other = embedding, residuals, Python)")
        print(f"{'cfg':<4}" + "".join(f"{k:>14}" for k in kinds))
        for r in profiled:
            p = r["profile"]
            print(f"{r['config']:<4}" + "".join(f"{100 * p['spent'].get(k, 0.0) / p['total']:>13.0f}%"
                                                  for k in kinds))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS),
                   help="which model configurations to run")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per framework (default per config)")
    p.add_argument("--steps", type=int, default=None, help="steps per round (default per config)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for each framework (BLAS, OpenMP, minigpt's pool); default: all cores")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="skip the per-layer-kind profile of minigpt")
    p.add_argument("--torch-adamw", choices=["default", "foreach", "fused"], default="default",
                   help="PyTorch AdamW implementation (default: what torch picks on the CPU)")
    p.add_argument("--import-order", action="store_true",
                   help="also run minigpt imported before NumPy (the default workers import NumPy first)")
    p.add_argument("--busy", type=int, default=0, metavar="N",
                   help="run beside N processes that each keep a core busy (a loaded machine)")
    p.add_argument("--same-process", action="store_true",
                   help="also run both frameworks in one process, NumPy, torch and minigpt all imported")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=VALUE",
                   help="also run minigpt with NAME=VALUE in its environment (repeatable)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=["minigpt", "torch", "both"], help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--import-minigpt-first", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for v in args.variant:
        if "=" not in v or not v.partition("=")[0]:
            p.error(f"--variant {v!r}: expected NAME=VALUE")
    if args.worker:
        return worker_main(args)

    from importlib.util import find_spec

    with_torch = not args.no_torch and find_spec("torch") is not None
    for line in environment(with_torch, args.threads):
        print(line, flush=True)
    print(f"workers import NumPy first; busy-loop processes beside them: {args.busy}", flush=True)
    results = []
    busy = [busy_loop() for _ in range(args.busy)]
    try:
        for name in args.configs:
            r = bench_config(name, args, with_torch)
            results.append(r)
            m = r["minigpt"]
            msg = f"{name}: minigpt {m['tok_s']:.0f} tok/s ({m['ms']:.1f} ms/step)"
            if with_torch:
                msg += f", PyTorch {r['torch']['tok_s']:.0f} tok/s, ratio {m['tok_s'] / r['torch']['tok_s']:.2f}x"
            if "minigpt-first" in r:
                msg += f"; minigpt imported first {r['minigpt-first']['ms']:.1f} ms/step"
            print(msg, flush=True)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    report(results, with_torch)
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": environment(with_torch, args.threads),
                                               "results": results}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
