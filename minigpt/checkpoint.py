"""Checkpoints: one `.npz` file that rebuilds a model, its optimizer and its tokenizer.

Layout of the archive (every entry a plain array, so it loads with
`np.load(path, allow_pickle=False)`):

    param/<name>     every model parameter, named as in `model.params`
    adam_m/<name>    AdamW first moments   (only when an optimizer was saved)
    adam_v/<name>    AdamW second moments  (only when an optimizer was saved)
    meta             UTF-8 JSON text as uint8 bytes: format, config, iter_num,
                     best_val_loss, train_args, rng_state, adam step and settings
    tokenizer        UTF-8 JSON text as uint8 bytes (`tokenizer.to_json()`), if any

Writes are atomic: the archive is written to a temporary file in the same
folder, flushed to disk, then renamed over the old one, so a crash or a full
disk mid-write leaves the previous checkpoint intact.
"""
import json
import math
import os
import zipfile

import numpy as np

from .fileio import atomic_write
from .model import GPT, GPTConfig, param_shapes, params_mismatch

FORMAT = "minigpt-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, foreign or otherwise unusable."""


def _text_array(text):
    """UTF-8 text as a uint8 array: stored without pickle, 1 byte per ASCII char."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _array_text(arr):
    return arr.tobytes().decode("utf-8")


def _finite_or_none(x):
    """JSON has no infinity: store inf/NaN as None."""
    return float(x) if x is not None and math.isfinite(float(x)) else None


def save_checkpoint(path, model, optimizer=None, tokenizer=None, iter_num=0,
                    best_val_loss=float("inf"), train_args=None, rng_state=None):
    """Write everything needed to rebuild or resume a run into one `.npz`, atomically.

    path: the target file (its folder is created if needed); model: a GPT (on
    any device; saved as host NumPy); optimizer: an AdamW or None; tokenizer:
    an object with `to_json()` or None; train_args, rng_state: JSON-able
    values (dicts of numbers/strings, e.g. `Generator.bit_generator.state`).
    """
    arrays = {f"param/{k}": v for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT, "version": VERSION,
        "config": model.config.to_dict(),
        "iter_num": int(iter_num),
        "best_val_loss": _finite_or_none(best_val_loss),
        "train_args": train_args,
        "rng_state": rng_state,
    }
    if optimizer is not None:
        from .backend import to_numpy
        state = optimizer.state_dict()
        for k in model.params:
            arrays[f"adam_m/{k}"] = to_numpy(state["m"][k])
            arrays[f"adam_v/{k}"] = to_numpy(state["v"][k])
        meta["adam"] = {"t": int(state["t"]), "lr": optimizer.lr,
                        "betas": [optimizer.beta1, optimizer.beta2],
                        "eps": optimizer.eps, "weight_decay": optimizer.weight_decay}
    arrays["meta"] = _text_array(json.dumps(meta))
    if tokenizer is not None:
        arrays["tokenizer"] = _text_array(tokenizer.to_json())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _read_archive(path):
    """Every entry of the .npz as a dict of arrays; CheckpointError if unreadable."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is damaged or not a minigpt checkpoint (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise CheckpointError(f"{path} holds a pickled object; minigpt refuses to load "
                                  f"pickles (they can run code): use a checkpoint written by minigpt")
        raise CheckpointError(f"{path} is damaged or not a minigpt checkpoint ({e})")
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CheckpointError(f"{path} is damaged or not a minigpt checkpoint ({e})")


def _read_meta(path, arrays):
    """The JSON metadata, checked for format and version."""
    if "meta" not in arrays:
        raise CheckpointError(f"{path} is not a minigpt checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(_array_text(arrays["meta"]))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path} is damaged: its metadata is not valid JSON ({e})")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a minigpt checkpoint (unknown format)")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} is checkpoint version {meta.get('version')}; "
                              f"this minigpt reads version {VERSION}")
    for key in ("config", "iter_num"):
        if key not in meta:
            raise CheckpointError(f"{path} is damaged: its metadata has no {key!r}")
    return meta


def _check_arrays(path, arrays, prefix, shapes):
    """Return {name: array} for one prefix, requiring exactly the expected names and shapes."""
    found = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    problem = params_mismatch(found, shapes)
    if problem:
        raise CheckpointError(f"{path} is from another model shape or damaged: {prefix} {problem}")
    return {name: found[name] for name in shapes}


def load_checkpoint(path):
    """Read and validate a checkpoint written by `save_checkpoint`.

    Returns a dict: model (a GPT on the CPU), config (GPTConfig), tokenizer
    (or None), optimizer_state ({"t", "m", "v", "hparams"} or None),
    iter_num (int), best_val_loss (float, inf if none), train_args, rng_state.
    Raises CheckpointError with a one-line message for a missing, damaged,
    pickled or inconsistent file.
    """
    arrays = _read_archive(path)
    meta = _read_meta(path, arrays)
    try:
        config = GPTConfig(**meta["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has an invalid model config: {e}")
    shapes = param_shapes(config)
    params = _check_arrays(path, arrays, "param/", shapes)
    model = GPT(config, params={k: np.ascontiguousarray(v) for k, v in params.items()})
    optimizer_state = None
    if "adam" in meta:
        m = _check_arrays(path, arrays, "adam_m/", shapes)
        v = _check_arrays(path, arrays, "adam_v/", shapes)
        optimizer_state = {"t": int(meta["adam"]["t"]), "m": m, "v": v, "hparams": meta["adam"]}
    tokenizer = None
    if "tokenizer" in arrays:
        tokenizer = _load_tokenizer(path, arrays["tokenizer"], config)
    best = meta.get("best_val_loss")
    return {
        "model": model, "config": config, "tokenizer": tokenizer,
        "optimizer_state": optimizer_state, "iter_num": int(meta["iter_num"]),
        "best_val_loss": float("inf") if best is None else float(best),
        "train_args": meta.get("train_args"), "rng_state": meta.get("rng_state"),
    }


def _load_tokenizer(path, arr, config):
    """Rebuild the stored tokenizer and check that the model can embed all its ids."""
    from .tokenizer import tokenizer_from_json
    try:
        tokenizer = tokenizer_from_json(_array_text(arr))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is damaged: its tokenizer cannot be read ({e})")
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(f"{path} is inconsistent: tokenizer has {tokenizer.vocab_size} "
                              f"tokens but the model embeds only {config.vocab_size}")
    return tokenizer


def load_model(path):
    """The model (on the CPU) and tokenizer (or None) stored in a checkpoint."""
    ckpt = load_checkpoint(path)
    return ckpt["model"], ckpt["tokenizer"]
