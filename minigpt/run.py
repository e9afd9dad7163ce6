"""A training run's state: where it starts (fresh, --resume, --init-from) and how it is saved.

`make_run` turns the command-line flags into a `Run`: the model on its
device, the AdamW optimizer, the tokenizer, the train/val tokens and the two
random generators. Resuming restores every one of them from `ckpt.npz`, so
a resumed run continues exactly as if it had never stopped (on the CPU).
"""
import argparse
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import data, task
from .backend import default_rng, enable_tf32, resolve_device, xp_for
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .model import GPT, GPTConfig
from .optim import AdamW
from .progress import read_metrics

SHAPE_FLAGS = ("n_layer", "n_head", "n_embd", "block_size")   # fixed by a checkpoint
TOKENIZER_FLAGS = ("tokenizer", "vocab_size")                  # fixed by a checkpoint
NOT_RESUMED = ("file", "out_dir", "device", "tf32", "resume", "overwrite")  # from this command line


class UsageError(ValueError):
    """A flag or a combination of flags that cannot work; the message says what to do."""


def _check_same(given, explicit, found, source):
    """UsageError if a flag given on the command line contradicts what `source` fixes."""
    for name, value in found.items():
        if name in explicit and getattr(given, name) != value:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{source} has {flag} {value}, but {flag} {getattr(given, name)} was "
                             f"given: drop the flag (or start afresh in another --out-dir)")


def start_state(args, explicit, ckpt_path):
    """Where training starts: (model on the host, tokenizer or None, checkpoint dict or None).

    --resume merges the checkpoint's training arguments into `args` (explicit flags win)."""
    if args.resume:
        try:
            ck = load_checkpoint(ckpt_path)
        except CheckpointError as e:
            if not os.path.exists(ckpt_path):
                raise CheckpointError(f"--resume: no checkpoint at {ckpt_path} (train without "
                                      f"--resume first, or give the run's --out-dir)") from None
            raise e
        saved = ck["train_args"] or {}
        _check_same(args, explicit, {k: saved[k] for k in SHAPE_FLAGS + TOKENIZER_FLAGS if k in saved}, ckpt_path)
        for k, v in saved.items():             # the run's own flags, unless given again
            if k in vars(args) and k not in explicit and k not in NOT_RESUMED:
                setattr(args, k, v)
        return ck["model"], ck["tokenizer"], ck
    if not args.overwrite and os.path.exists(ckpt_path):
        raise UsageError(f"{ckpt_path} already exists: continue it with --resume, or pass "
                         f"--overwrite or another --out-dir to start afresh")
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


def load_data(args, tokenizer):
    """Tokens of FILE (cached in OUT_DIR) and the tokenizer; train/val splits checked for length."""
    from .tokenizer import build_tokenizer
    t = time.perf_counter()
    if tokenizer is None:
        key = {"kind": args.tokenizer, "vocab_size": args.vocab_size}
        make = lambda text: build_tokenizer(args.tokenizer, text, args.vocab_size)  # noqa: E731
        tokens, tokenizer, cached = data.load_corpus(args.file, args.out_dir, make, key)
    else:
        tokens, tokenizer, cached = data.load_corpus(args.file, args.out_dir, tokenizer=tokenizer)
    data.check_length(tokens, args.block_size, args.file)
    how = "read from the cache" if cached else f"encoded in {time.perf_counter() - t:.1f} s"
    print(f"data: {args.file}: {len(tokens):,} tokens, vocabulary {tokenizer.vocab_size} ({how})")
    return tokens, tokenizer


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
    elapsed0: float = 0.0                      # seconds spent by earlier (resumed) runs
    t0: float = 0.0                            # time.perf_counter() at the start of this process

    def path(self, name):
        return os.path.join(self.args.out_dir, name)

    def elapsed(self):
        return self.elapsed0 + time.perf_counter() - self.t0


def make_run(args, explicit, t0, check=lambda args: None):
    """Flags -> a ready Run (fresh, resumed or fine-tuning) on the chosen device.

    check(args) validates the flags once a checkpoint's have been merged in."""
    device = resolve_device(args.device)
    if args.tf32:
        enable_tf32(device)
    xp = xp_for(device)
    model, tokenizer, ck = start_state(args, explicit, os.path.join(args.out_dir, "ckpt.npz"))
    check(args)
    os.makedirs(args.out_dir, exist_ok=True)
    if task.is_task_file(args.file):           # prompt/completion pairs: one example per row
        source = args.init_from or args.init_from_pretrained or (args.resume and os.path.join(args.out_dir, "ckpt.npz"))
        tokens, tokenizer = task.load_task(args, tokenizer, model, source, resumed=ck is not None)
    else:
        tokens, tokenizer = load_data(args, tokenizer)
    if model is None:
        model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=args.block_size,
                              n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                              dropout=args.dropout), seed=args.seed)
    model.config.dropout = args.dropout        # a fine-tuned or resumed model may change it
    model.to(device)
    opt = AdamW(model.params, lr=args.lr, betas=(0.9, args.beta2), weight_decay=args.weight_decay)
    run = Run(args, model, opt, tokenizer, *data.split(tokens), xp,
              np.random.default_rng(args.seed), default_rng(xp, args.seed + 1), t0=t0)
    if ck is not None:
        restore(run, ck, device)
    return run


def restore(run, ck, device):
    """Put a checkpoint's optimizer state, iteration, RNG states and history into the run."""
    xp, st = run.xp, ck["optimizer_state"]
    if st is None:
        raise CheckpointError(f"{run.path('ckpt.npz')} holds no optimizer state, so it cannot be resumed")
    run.opt.load_state_dict({"t": st["t"], "m": {k: xp.asarray(v) for k, v in st["m"].items()},
                             "v": {k: xp.asarray(v) for k, v in st["v"].items()}})
    run.it, run.best, run.last_eval = ck["iter_num"], ck["best_val_loss"], ck["iter_num"]
    run.elapsed0 = float((ck["train_args"] or {}).get("elapsed_s", 0.0))
    states = ck["rng_state"] or {}
    if "batch" in states:
        run.batch_rng.bit_generator.state = states["batch"]
    if states.get("dropout") is not None and device == "cpu":
        run.dropout_rng.bit_generator.state = states["dropout"]
    else:                                      # a device generator: reseeded, not restored
        run.dropout_rng = default_rng(xp, run.args.seed + 1 + run.it)
    run.records = read_metrics(run.path("metrics.jsonl"), run.it)
    print(f"resuming {run.path('ckpt.npz')} at iter {run.it} (best val loss {run.best:.4f})")


def save(run):
    """Write ckpt.npz (atomically): weights, AdamW state, RNG states, flags, tokenizer."""
    states = {"batch": run.batch_rng.bit_generator.state,
              "dropout": getattr(getattr(run.dropout_rng, "bit_generator", None), "state", None)}
    if not isinstance(states["dropout"], dict):
        states["dropout"] = None               # a device generator without a JSON-able state
    save_checkpoint(run.path("ckpt.npz"), run.model, run.opt, run.tokenizer, run.it, run.best,
                    dict(vars(run.args), elapsed_s=run.elapsed()), states)
