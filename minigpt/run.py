"""A training run's state: where it starts (fresh, --resume, --init-from) and how it is saved.

`make_run` turns the command-line flags into a `Run`: the model on its
device, the AdamW optimizer, the tokenizer, the train/val tokens and the two
random generators. Resuming restores every one of them from `ckpt.npz`, so
a resumed run continues exactly as if it had never stopped (on the CPU).
"""
import argparse
import math
import os
import re
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from . import data, flops, task
from .backend import default_rng, enable_tf32, resolve_device, xp_for
from .checkpoint import CheckpointError, _short, load_checkpoint, save_checkpoint
from .dist import RanksDiverged, Solo, world
from .model import GPT, GPTConfig
from .optim import AdamW
from .inputs import UsageError, check_inputs
from .progress import read_log, read_metrics

MAX_ELAPSED_S = 1e9            # seconds a run can have trained for (31 years): more is a lie
SHAPE_FLAGS = ("n_layer", "n_head", "n_embd", "block_size")   # fixed by a checkpoint
TOKENIZER_FLAGS = ("tokenizer", "vocab_size")                  # fixed by a checkpoint
RESUME_NEEDS = ("batch_size", "grad_accum", "lr", "min_lr", "warmup_iters", "weight_decay",
                "beta2", "grad_clip", "seed")                  # a resumed run's schedule and batches
NOT_RESUMED = ("file", "out_dir", "device", "tf32", "resume", "overwrite")  # from this command line


def check_types(args, parser):
    """UsageError unless every value has the type its flag parses to (a resumed run's
    flags come from its checkpoint, not from argparse)."""
    for action in parser._actions:
        if action.dest not in vars(args) or action.dest == "help":
            continue
        v, name = getattr(args, action.dest), (action.option_strings or [action.dest.upper()])[-1]
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if v is None and action.default is None:
            continue
        if action.nargs == 0:
            ok, kind = isinstance(v, bool), "true or false"
        elif action.choices:
            ok, kind = isinstance(v, str) and v in action.choices, f"one of {list(action.choices)}"
        elif action.type is int:
            ok, kind = number and isinstance(v, int), "an integer"
        elif action.type is float:
            ok, kind = number, "a number"
        else:
            ok, kind = isinstance(v, str), "a string"
        if not ok:
            raise UsageError(f"{name} must be {kind}, got {_short(v)}")


def _check_same(given, explicit, found, source):
    """UsageError if a flag given on the command line contradicts what `source` fixes."""
    for name, value in found.items():
        if name in explicit and getattr(given, name) != value:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{source} has {flag} {value}, but {flag} {getattr(given, name)} was "
                             f"given: drop the flag (or start afresh in another --out-dir)")


def _merge_saved(args, saved, explicit=()):
    """Set the run's own saved flags on args, except those given again on the command line."""
    for k, v in saved.items():
        if k in vars(args) and k not in explicit and k not in NOT_RESUMED:
            setattr(args, k, v)
    return args


def start_state(args, explicit, ckpt_path, check=lambda args: None):
    """Where training starts: (model on the host, tokenizer or None, checkpoint dict or None).

    --resume merges the checkpoint's training arguments into `args` (explicit flags win);
    check(args) must accept the saved ones alone, or the checkpoint is damaged."""
    check_inputs(args)                         # again: a file may have gone since the start
    if args.resume:
        ck = load_checkpoint(ckpt_path)
        if ck["tokenizer"] is None:
            raise CheckpointError(f"{ckpt_path} holds no tokenizer, so it cannot be resumed "
                                  f"(its ids would mean nothing)")
        saved = dict(ck["train_args"] or {})
        missing = [k for k in RESUME_NEEDS if k not in saved]
        if missing:
            raise CheckpointError(f"{ckpt_path}: damaged checkpoint: train_args has no {', '.join(missing)} "
                                  f"(needed to continue the run exactly)")
        sha = saved.pop("text_sha256", None)   # not a flag: compared with FILE's once it is read
        if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            raise CheckpointError(f"{ckpt_path}: damaged checkpoint: train_args.text_sha256 must be the "
                                  f"training text's SHA-256 (64 hex digits), got {_short(sha)}")
        saved.update({k: getattr(ck["model"].config, k) for k in SHAPE_FLAGS})   # the weights' shape
        try:
            check(_merge_saved(argparse.Namespace(**vars(args)), saved))
        except UsageError as e:
            raise CheckpointError(f"{ckpt_path}: damaged checkpoint: train_args ({e})") from None
        fixed = {k: saved[k] for k in SHAPE_FLAGS + TOKENIZER_FLAGS if k in saved}
        _check_same(args, explicit, fixed, ckpt_path)
        _merge_saved(args, saved, explicit)    # the run's own flags, unless given again
        return ck["model"], ck["tokenizer"], ck
    if args.init_from or args.init_from_pretrained:
        if args.init_from:
            ck = load_checkpoint(args.init_from)
            model, tokenizer, source = ck["model"], ck["tokenizer"], args.init_from
        else:
            model, tokenizer = _load_pretrained(args.init_from_pretrained)
            source = args.init_from_pretrained
        if tokenizer is None:
            raise UsageError(f"{source} holds no tokenizer, so its model cannot read text")
        _check_same(args, explicit, {k: getattr(model.config, k) for k in SHAPE_FLAGS}, source)
        if "tokenizer" in explicit or "vocab_size" in explicit:
            raise UsageError(f"--init-from keeps the tokenizer of {source}: drop --tokenizer/--vocab-size")
        for k in SHAPE_FLAGS:
            setattr(args, k, getattr(model.config, k))
        return model, tokenizer, None
    return None, None, None


def _load_pretrained(directory):
    """GPT-2 weights through minigpt.pretrained (imported only when asked for)."""
    try:
        from .pretrained import load_pretrained
    except ImportError:
        raise UsageError("--init-from-pretrained needs minigpt/pretrained.py, which this "
                         "checkout does not have yet") from None
    try:
        return load_pretrained(directory)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load GPT-2 weights from {directory}: {e}") from None


def load_data(args, tokenizer, write_cache=True):
    """Tokens of FILE (cached in OUT_DIR, by rank 0 alone) and the tokenizer; train/val splits
    checked for length."""
    from .tokenizer import build_tokenizer
    t = time.perf_counter()
    if tokenizer is None:
        key = {"kind": args.tokenizer, "vocab_size": args.vocab_size}
        make = lambda text: build_tokenizer(args.tokenizer, text, args.vocab_size)  # noqa: E731
        tokens, tokenizer, cached, digest = data.load_corpus(args.file, args.out_dir, make, key,
                                                             write_cache=write_cache)
    else:
        tokens, tokenizer, cached, digest = data.load_corpus(args.file, args.out_dir, tokenizer=tokenizer,
                                                             write_cache=write_cache)
    data.check_length(tokens, args.block_size, args.file)
    how = "read from the cache" if cached else f"encoded in {time.perf_counter() - t:.1f} s"
    print(f"data: {args.file}: {len(tokens):,} tokens, vocabulary {tokenizer.vocab_size} ({how})")
    return tokens, tokenizer, digest


def _check_same_text(args, ck, digest):
    """UsageError if --resume is given a text other than the one the checkpoint trained on."""
    saved = ck["train_args"]["text_sha256"]    # present and well-formed: checked by start_state
    if saved != digest:
        ckpt = os.path.join(args.out_dir, "ckpt.npz")
        raise UsageError(f"--resume: {args.file} has changed since {ckpt} was saved at iter {ck['iter_num']} "
                         f"(SHA-256 {digest[:12]}..., the run trained on {str(saved)[:12]}...): restore "
                         f"the text, or fine-tune on the new one with --init-from {ckpt} --out-dir NEW")


@dataclass
class Run:
    """Everything the training loop changes, which is what a checkpoint keeps."""
    args: argparse.Namespace
    model: GPT
    opt: AdamW
    tokenizer: object
    train_tokens: np.ndarray
    val_tokens: np.ndarray
    xp: object                                 # numpy or cupy
    batch_rng: np.random.Generator             # host: batch offsets
    dropout_rng: object                        # on the device: dropout masks
    it: int = 0                                # optimizer steps done
    best: float = math.inf                     # best val loss so far
    last_eval: int = -1                        # iteration of the latest eval
    records: list = field(default_factory=list)    # one dict per eval (metrics.jsonl)
    log: list = field(default_factory=list)        # one dict per log line (log.jsonl)
    elapsed0: float = 0.0                      # seconds spent by earlier (resumed) runs
    lr_reached: float = None                   # the last step's lr once past the warm-up (saved)
    relay: tuple = None                        # (iter, lr) a budgeted cosine is re-laid from
    t0: float = 0.0                            # time.perf_counter() at the start of this process
    comm: object = field(default_factory=Solo)     # dist.world(): this rank's place among N
    text_sha256: str = ""                      # of the training text, checked by --resume

    def path(self, name):
        return os.path.join(self.args.out_dir, name)

    def elapsed(self):
        return self.elapsed0 + time.perf_counter() - self.t0


def make_run(args, explicit, t0, check=lambda args: None):
    """Flags -> a ready Run (fresh, resumed or fine-tuning) on the chosen device.

    check(args) validates the flags once a checkpoint's have been merged in."""
    comm = world()
    if args.device != "cpu":
        comm.use_gpu()                         # rank r: GPU r % device_count on its machine
    device = resolve_device(args.device)
    if args.tf32:
        enable_tf32(device)
    xp = xp_for(device)
    model, tokenizer, ck = start_state(args, explicit, os.path.join(args.out_dir, "ckpt.npz"), check)
    check(args)
    if task.is_task_file(args.file):           # prompt/completion pairs: one example per row
        source = args.init_from or args.init_from_pretrained or (args.resume and os.path.join(args.out_dir, "ckpt.npz"))
        tokens, tokenizer, digest = task.load_task(args, tokenizer, model, source, resumed=ck is not None)
    else:                                      # rank 0 writes the token cache, then the others read it
        tokens, tokenizer, digest = comm.root_first(lambda: load_data(args, tokenizer, comm.is_root))
    if ck is not None:
        _check_same_text(args, ck, digest)
    _check_memory(args, tokenizer.vocab_size if model is None else model.config.vocab_size)
    if model is None:
        model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=args.block_size,
                              n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                              dropout=args.dropout), seed=args.seed)
    model.config.dropout = args.dropout        # a fine-tuned or resumed model may change it
    model.to(device)
    opt = AdamW(model.params, lr=args.lr, betas=(0.9, args.beta2), weight_decay=args.weight_decay)
    run = Run(args, model, opt, tokenizer, *data.split(tokens), xp,
              np.random.default_rng(args.seed), default_rng(xp, comm.seed(args.seed + 1)), t0=t0,
              comm=comm, text_sha256=digest)
    if ck is not None:
        restore(run, ck, device)
    return run


def _check_memory(args, vocab_size):
    """UsageError if one step of this model and batch would need more memory than the machine has
    (found now, in one line, not by the out-of-memory killer)."""
    cfg = argparse.Namespace(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                             block_size=args.block_size, vocab_size=vocab_size)
    need, have = flops.step_bytes(cfg, args.batch_size), flops.physical_memory()
    if have and need > have:
        raise UsageError(f"one training step needs about {need / 2**30:.1f} GiB, more than this "
                         f"machine's {have / 2**30:.1f} GiB: try a smaller --batch-size, --block-size, "
                         f"--n-embd or --n-layer")


def restore(run, ck, device):
    """Put a checkpoint's optimizer state, iteration, RNG states and history into the run."""
    xp, st = run.xp, ck["optimizer_state"]
    if st is None:
        raise CheckpointError(f"{run.path('ckpt.npz')} holds no optimizer state, so it cannot be resumed")
    run.opt.load_state_dict({"t": st["t"], "m": {k: xp.asarray(v) for k, v in st["m"].items()},
                             "v": {k: xp.asarray(v) for k, v in st["v"].items()}})
    run.it, run.best, run.last_eval = ck["iter_num"], ck["best_val_loss"], ck["iter_num"]
    elapsed = (ck["train_args"] or {}).get("elapsed_s", 0.0)
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not 0 <= elapsed <= MAX_ELAPSED_S:
        raise CheckpointError(f"{run.path('ckpt.npz')}: damaged checkpoint: train_args.elapsed_s "
                              f"must be a number of seconds, got {elapsed!r}")
    run.elapsed0 = float(elapsed)
    reached = (ck["train_args"] or {}).get("lr_reached")
    if reached is not None:                    # a budgeted resume never raises the lr above it
        if isinstance(reached, bool) or not isinstance(reached, (int, float)) or not 0 <= reached < math.inf:
            raise CheckpointError(f"{run.path('ckpt.npz')}: damaged checkpoint: train_args.lr_reached "
                                  f"must be a learning rate, got {reached!r}")
        run.lr_reached = float(reached)
        run.relay = (run.it, run.lr_reached)
    states = _rng_states(ck["rng_state"], run.path("ckpt.npz"))
    run.batch_rng.bit_generator.state = states["batch"]
    if states["dropout"] is not None and device == "cpu" and run.comm.is_root:
        run.dropout_rng.bit_generator.state = states["dropout"]
    else:                                      # a device generator or rank > 0's: reseeded
        run.dropout_rng = default_rng(xp, run.comm.seed(run.args.seed + 1 + run.it))
    run.records = read_metrics(run.path("metrics.jsonl"), run.it)
    run.log = read_log(run.path("log.jsonl"), run.it)
    print(f"resuming {run.path('ckpt.npz')} at iter {run.it} (best val loss {run.best:.4f})")


def _rng_states(states, where):
    """{"batch": state, "dropout": state or None}, each a NumPy PCG64 state as `save` writes it
    (checked on a throwaway generator, read back equal); else "damaged checkpoint: rng_state"."""
    ok = isinstance(states, dict) and set(states) == {"batch", "dropout"}
    for name, state in (states.items() if ok else ()):
        if state is None and name == "dropout":
            continue
        probe = np.random.PCG64()
        try:
            probe.state = state
            ok = ok and isinstance(state, dict) and probe.state == state
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
            ok = False
    if not ok:
        raise CheckpointError(f"{where}: damaged checkpoint: rng_state is not the batch and dropout "
                              f"NumPy generator states minigpt saves")
    return states


def save(run):
    """Write ckpt.npz (atomically): weights, AdamW state, RNG states, flags, tokenizer.

    Under MPI every rank calls it: the weights are checked equal on all ranks, rank 0
    writes (the same file as one process's), and the others wait until it has. Weights
    that differ between ranks (a bug) still leave rank 0's state saved, a valid checkpoint
    that --resume gives to every rank: then RanksDiverged stops the run on every rank."""
    agree = run.comm.weights_agree(run.model.params)
    if run.comm.is_root:
        _write(run)
    run.comm.barrier()
    if not agree:
        raise RanksDiverged(f"the weights differed between ranks at iter {run.it} (a bug in minigpt's "
                            f"data-parallel step): saved rank 0's state to {run.path('ckpt.npz')}; "
                            f"continue with --resume")


def _write(run):
    states = {"batch": run.batch_rng.bit_generator.state,
              "dropout": getattr(getattr(run.dropout_rng, "bit_generator", None), "state", None)}
    if not isinstance(states["dropout"], dict):
        states["dropout"] = None               # a device generator without a JSON-able state
    save_checkpoint(run.path("ckpt.npz"), run.model, run.opt, run.tokenizer, run.it, run.best,
                    dict(vars(run.args), elapsed_s=run.elapsed(), ranks=run.comm.size, lr_reached=run.lr_reached,
                         text_sha256=run.text_sha256), states)


class Interrupted(KeyboardInterrupt):
    """A signal that aborts at once (before training, or a second time): exit 128 + signum."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class StopOnSignal:
    """SIGINT (Ctrl-C), SIGTERM (a scheduler, `timeout`) and SIGHUP (a closed terminal)
    handler: once training runs (armed), the first asks the run to stop after this step
    (or this eval, save or sample) and save; before that, or a second time, it aborts
    (Interrupted, which remembers the signal)."""

    def __init__(self):
        self.requested, self.armed, self.signum = False, False, None

    def __call__(self, signum, frame):
        if self.requested or not self.armed:
            raise Interrupted(signum)
        self.requested, self.signum = True, signum


class PipeGuard:
    """stdout for a training run: if the reader goes away (`| head`), the write is dropped, the
    run is asked to stop like SIGPIPE (so it saves and exits 141) and later output goes nowhere,
    so a closed pipe never costs the work since the last checkpoint."""

    def __init__(self, stream, stop):
        self.stream, self.stop, self.broken = stream, stop, False

    def _guarded(self, call, *a):
        if self.broken or self.stream is None:        # None: started with stdout closed
            return len(a[0]) if a else None
        try:
            return call(*a)
        except BrokenPipeError:
            self.broken, self.stop.requested = True, True
            self.stop.signum = self.stop.signum or getattr(signal, "SIGPIPE", 13)
            try:                               # nothing more reaches the pipe, not even at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            except (OSError, ValueError, AttributeError):
                pass
            return len(a[0]) if a else None

    def write(self, text):
        return self._guarded(self.stream.write, text)

    def flush(self):
        return self._guarded(self.stream.flush)

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextmanager
def handling(handler, signums):
    """Route the signals to handler for the duration (main thread only: elsewhere Python cannot)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
