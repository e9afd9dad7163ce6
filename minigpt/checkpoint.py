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
disk mid-write leaves the previous checkpoint intact. Reads trust nothing:
only the expected entries are read, each declared size is checked against
the file before anything is allocated, every metadata field is checked for
type and range ("damaged checkpoint: <field>"), and weights must be finite.
"""
import dataclasses
import json
import math
import os
import zipfile

import numpy as np

from .fileio import FileError, atomic_write, loads_versioned, require_regular_file
from .model import GPT, GPTConfig, param_shapes

FORMAT = "minigpt-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, foreign or otherwise unusable."""


def _text_array(text):
    """UTF-8 text as a uint8 array: stored without pickle, 1 byte per ASCII char."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


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


MAX_TEXT_BYTES = 64 << 20       # the meta and tokenizer entries are JSON text, at most this long
DEFLATE_MAX_RATIO = 1100        # no deflated entry expands more than this (deflate's limit is 1032)


def _damaged(path, field, why):
    return CheckpointError(f"{path}: damaged checkpoint: {field} {why}")


def _open_archive(path):
    """The checkpoint as an open ZipFile; CheckpointError for a missing, foreign or odd path."""
    try:
        require_regular_file(path, "checkpoint")
    except FileError as e:
        raise CheckpointError(str(e)) from None
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is damaged or not a minigpt checkpoint (not an .npz archive)")
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"{path} is damaged or not a minigpt checkpoint ({e})") from None


def _read_entry(path, zf, name, shape=None, max_bytes=None):
    """One .npy entry of the archive, read only after its header has been checked against the
    expected shape and against the bytes the file really holds (nothing huge is allocated on
    the word of a small file). Returns a host array, or None if the entry is absent."""
    try:
        info = zf.getinfo(name + ".npy")
    except KeyError:
        return None
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            declared, _, dtype = read_header(f)
        if dtype.hasobject:
            raise CheckpointError(f"{path} holds a pickled object; minigpt refuses to load "
                                  f"pickles (they can run code): use a checkpoint written by minigpt")
        if shape is not None and tuple(declared) != tuple(shape):
            raise CheckpointError(f"{path} is from another model shape or damaged: {name} has shape "
                                  f"{tuple(declared)}, the config needs {tuple(shape)}")
        nbytes = math.prod(declared) * dtype.itemsize
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO
        if (nbytes > info.file_size or info.file_size > ratio * max(info.compress_size, 1)
                or info.header_offset + info.compress_size > os.path.getsize(path)):
            raise _damaged(path, name, f"declares {nbytes:,} bytes, more than the file holds")
        if max_bytes is not None and nbytes > max_bytes:
            raise _damaged(path, name, f"is {nbytes:,} bytes, over the {max_bytes:,}-byte limit")
        with zf.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except CheckpointError:
        raise
    except Exception as e:                     # a damaged entry fails in many ways: zlib, an
        why = str(e).splitlines()[0] if str(e) else type(e).__name__   # unknown compression, a bad header
        raise _damaged(path, name, f"cannot be read ({why})") from None


def _read_text_entry(path, zf, name):
    arr = _read_entry(path, zf, name, max_bytes=MAX_TEXT_BYTES)
    if arr is None:
        return None
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise _damaged(path, name, "is not UTF-8 text stored as bytes")
    try:
        return arr.tobytes().decode("utf-8")
    except UnicodeDecodeError:
        raise _damaged(path, name, "is not UTF-8 text") from None


def _read_meta(path, zf):
    """The JSON metadata, checked for format, version and the type and range of every field."""
    text = _read_text_entry(path, zf, "meta")
    if text is None:
        raise CheckpointError(f"{path} is not a minigpt checkpoint (no 'meta' entry)")
    try:
        meta = loads_versioned(text, FORMAT, VERSION, "checkpoint")
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    for key in ("config", "iter_num"):
        if key not in meta:
            raise _damaged(path, key, "is missing from the metadata")
    if not _is_int(meta["iter_num"]) or not 0 <= meta["iter_num"] <= MAX_STEPS:
        raise _damaged(path, "iter_num", f"must be a count in 0..{MAX_STEPS:,}, got {_short(meta['iter_num'])}")
    best = meta.get("best_val_loss")
    if best is not None and not (_is_number(best) and 0 <= best < math.inf):
        raise _damaged(path, "best_val_loss", f"must be a loss (a finite number, 0 or more) or null, "
                                              f"got {_short(best)}")
    for key in ("train_args", "rng_state"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise _damaged(path, key, f"must be an object or null, got {type(meta[key]).__name__}")
    if "adam" in meta:
        _check_adam(path, meta["adam"])
    return meta


MAX_STEPS = 10**12             # optimizer steps a checkpoint can have taken (a larger count is a lie)


def _short(v):
    """repr(v), cut to 40 characters (10**400 has 401 digits)."""
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_adam(path, adam):
    if not isinstance(adam, dict):
        raise _damaged(path, "adam", "must be an object")
    if not _is_int(adam.get("t")) or not 0 <= adam["t"] <= MAX_STEPS:
        raise _damaged(path, "adam.t", f"must be a step count in 0..{MAX_STEPS:,}, got {_short(adam.get('t'))}")
    for key, low in (("lr", 0.0), ("eps", 0.0), ("weight_decay", 0.0)):
        ok = key not in adam or (_is_number(adam[key]) and low <= adam[key] < math.inf
                                 and (key != "eps" or 0 < adam[key] < 1))
        if not ok:
            raise _damaged(path, f"adam.{key}", f"must be a finite number{' in (0, 1)' * (key == 'eps')}"
                                                f"{', 0 or more' * (key != 'eps')}, got {_short(adam[key])}")
    betas = adam.get("betas", [0.9, 0.999])
    if not (isinstance(betas, list) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
        raise _damaged(path, "adam.betas", f"must be two numbers in [0, 1), got {betas!r}")


def _read_config(path, meta, zf):
    """GPTConfig from the metadata, every field checked; a layer count the file cannot hold
    is refused before any parameter name or array is made for it."""
    cfg, fields = meta["config"], {f.name for f in dataclasses.fields(GPTConfig)}
    if not isinstance(cfg, dict) or not set(cfg) <= fields:
        raise _damaged(path, "config", f"must be an object with fields {sorted(fields)}")
    for key, value in cfg.items():
        ok = {"dropout": _is_number(value) and 0 <= value < 1, "bias": isinstance(value, bool)
              }.get(key, _is_int(value) and value >= 1)
        if not ok:
            raise _damaged(path, f"config.{key}", f"has the impossible value {value!r}")
    n_tensors = sum(n.startswith("param/") for n in zf.namelist())
    if 6 * cfg.get("n_layer", 1) > n_tensors:          # every block has at least 6 tensors
        raise _damaged(path, "config.n_layer", f"is {cfg.get('n_layer')}, but the file holds only "
                                               f"{n_tensors} parameter tensors")
    try:
        return GPTConfig(**cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has an invalid model config: {e}") from None


def _read_arrays(path, zf, prefix, shapes):
    """{name: float array} for one prefix: exactly the expected names and shapes, finite,
    float16 (or any other float) widened to float32, float64 kept."""
    extra = [n[len(prefix):-4] for n in zf.namelist() if n.startswith(prefix)
             and n[len(prefix):-4] not in shapes]
    out = {}
    for name, shape in shapes.items():
        a = _read_entry(path, zf, prefix + name, shape)
        if a is None:
            raise CheckpointError(f"{path} is from another model shape or damaged: {prefix} "
                                  f"missing {[n for n in shapes if n not in out][:3]}")
        if not np.issubdtype(a.dtype, np.floating):
            raise _damaged(path, prefix + name, f"has dtype {a.dtype}, not floating point")
        a = np.ascontiguousarray(a, dtype=np.float64 if a.dtype == np.float64 else np.float32)
        if not np.isfinite(a).all():
            raise _damaged(path, prefix + name, "holds values that are not finite (NaN or inf)")
        if prefix == "adam_v/" and (a < 0).any():
            raise _damaged(path, prefix + name, "holds negative second moments")
        out[name] = a
    if extra:
        raise CheckpointError(f"{path} is from another model shape or damaged: {prefix} "
                              f"unexpected tensors {extra[:3]}")
    return out


def load_checkpoint(path, optimizer=True):
    """Read and validate a checkpoint written by `save_checkpoint`.

    Only the entries a checkpoint has are read, each after its declared size has been
    checked against the file. optimizer: False skips the AdamW moments (for sampling).
    Returns a dict: model (a GPT on the CPU), config (GPTConfig), tokenizer
    (or None), optimizer_state ({"t", "m", "v", "hparams"} or None),
    iter_num (int), best_val_loss (float, inf if none), train_args, rng_state.
    Raises CheckpointError with a one-line message for a missing, damaged,
    pickled or inconsistent file.
    """
    with _open_archive(path) as zf:
        meta = _read_meta(path, zf)
        config = _read_config(path, meta, zf)
        shapes = param_shapes(config)
        model = GPT(config, params=_read_arrays(path, zf, "param/", shapes))
        optimizer_state = None
        if "adam" in meta and optimizer:
            m = _read_arrays(path, zf, "adam_m/", shapes)
            v = _read_arrays(path, zf, "adam_v/", shapes)
            optimizer_state = {"t": meta["adam"]["t"], "m": m, "v": v, "hparams": meta["adam"]}
        text = _read_text_entry(path, zf, "tokenizer")
    tokenizer = None if text is None else _load_tokenizer(path, text, config)
    best = meta.get("best_val_loss")
    return {
        "model": model, "config": config, "tokenizer": tokenizer,
        "optimizer_state": optimizer_state, "iter_num": meta["iter_num"],
        "best_val_loss": float("inf") if best is None else float(best),
        "train_args": meta.get("train_args"), "rng_state": meta.get("rng_state"),
    }


def _load_tokenizer(path, text, config):
    """Rebuild the stored tokenizer and check that the model can embed all its ids."""
    from .tokenizer import tokenizer_from_json
    try:
        tokenizer = tokenizer_from_json(text)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is damaged: its tokenizer cannot be read ({e})")
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(f"{path} is inconsistent: tokenizer has {tokenizer.vocab_size} "
                              f"tokens but the model embeds only {config.vocab_size}")
    return tokenizer


def load_model(path):
    """The model (on the CPU) and tokenizer (or None) stored in a checkpoint."""
    ckpt = load_checkpoint(path, optimizer=False)
    return ckpt["model"], ckpt["tokenizer"]
