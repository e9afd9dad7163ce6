"""What a training run reads and writes, checked before anything is touched.

    check_inputs(args)     # FILE, --init-from, --init-from-pretrained, the out-dir's files
    start_afresh(run)      # a fresh run removes the last run's metrics.jsonl, log.jsonl and loss.png

`python -m minigpt.train` calls check_inputs before it creates or locks the
out-dir, so a typo'd input leaves every file as it was (no lock, no deleted
metrics) and is reported as the first problem, not as "ckpt.npz already exists".
"""
import os

from . import data
from .checkpoint import CheckpointError
from .fileio import LOCK_NAME, FileError, check_folder, refuse_link, require_regular_file


class UsageError(ValueError):
    """A flag or a combination of flags that cannot work; the message says what to do."""


CACHE = ("tokens.bin", "tokens.json")          # the token cache: a failed fresh run may remove it
OUTPUTS = ("ckpt.npz", "metrics.jsonl", "log.jsonl", "loss.png") + CACHE   # what a run writes


def check_inputs(args):
    """Every input the flags name, then the out-dir's files, checked before anything is
    touched (the out-dir is not even created): the first real problem, in one line.

    FILE must exist (a file, a pipe or /dev/fd/N); --init-from must be a regular file;
    --init-from-pretrained a folder; --resume needs DIR/ckpt.npz, a fresh run needs
    --overwrite if it is there; no output name may be a folder or a symbolic link."""
    data.check_source(args.file)
    if args.init_from:
        try:
            require_regular_file(args.init_from, "checkpoint")
        except FileError as e:
            raise CheckpointError(f"--init-from: {e}") from None
    if args.init_from_pretrained and not os.path.isdir(args.init_from_pretrained):
        raise UsageError(f"cannot load GPT-2 weights from {args.init_from_pretrained}: it is not a "
                         f"directory (give a folder with GPT-2's config.json, model.safetensors, "
                         f"vocab.json and merges.txt)")
    check_folder(args.out_dir)
    for name in OUTPUTS + (LOCK_NAME,):
        path = os.path.join(args.out_dir, name)
        refuse_link(path)
        if os.path.lexists(path) and not os.path.isfile(path):     # found now, not at the first save
            raise UsageError(f"{path} is not a file: move it away, or give another --out-dir")
    ckpt_path = os.path.join(args.out_dir, "ckpt.npz")
    if args.resume and not os.path.lexists(ckpt_path):
        raise CheckpointError(f"--resume: no checkpoint at {ckpt_path} (train without "
                              f"--resume first, or give the run's --out-dir)")
    if not args.resume and not args.overwrite and os.path.exists(ckpt_path):
        raise UsageError(f"{ckpt_path} already exists: continue it with --resume, or pass "
                         f"--overwrite or another --out-dir to start afresh")


def start_afresh(run):
    """A fresh run's history starts empty: the last run's metrics.jsonl, log.jsonl and loss.png go, once
    every input and flag has been checked (rank 0 owns the files)."""
    if run.args.resume or not run.comm.is_root:
        return
    for name in ("metrics.jsonl", "log.jsonl", "loss.png"):
        path = run.path(name)
        if os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)


