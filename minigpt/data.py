"""From a text file to training batches, all on the host in NumPy.

    text = read_text("shakespeare.txt")           # checked: exists, UTF-8, not empty; read once
    tokens = encode(text, tokenizer)              # (N,) uint16 when the vocabulary fits
    train, val = split(tokens)                    # first 90% / last 10%
    x, y = get_batch(train, 12, 64, rng)          # (B, T) inputs and next-token targets

`load_corpus` does the first three steps and caches the tokens (and the
tokenizer that made them) in the output folder as a raw `.bin` file that
`np.memmap` opens, so a second run on the same file does not re-tokenize.
"""
import hashlib
import json
import os
import stat

import numpy as np

from .fileio import FileError, atomic_write, file_digest, loads_json, read_bytes, read_regular_text

VAL_FRACTION = 0.1
CACHE_VERSION = 1
CHUNK_CHARS = 1 << 20          # encode big texts a chunk of about this many characters at a time


class DataError(ValueError):
    """A text file that cannot be used for training; the message says why and what to do."""


def read_text(path):
    """The contents of a UTF-8 text file, or DataError with a one-line reason.

    The file is read once, so a pipe or `<(cat f.txt)` works. A leading
    byte-order mark is dropped. Returns a str (never empty).
    """
    return _decode(read_raw(path), path)


def check_source(path):
    """DataError unless path names something a text can be read from: a file, a pipe, a FIFO
    or /dev/fd/N; not missing, not a folder, not a device. Nothing is opened."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"no such file: {path}")
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory: give a text file, e.g. shakespeare.txt")
    mode = os.stat(path).st_mode
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise DataError(f"{path} is a device, not a text file (a pipe or a file works)")
    return path


def read_raw(path):
    """The bytes of a text file (or pipe), read once; DataError for a missing path or a folder."""
    path = check_source(path)
    try:
        return read_bytes(path)
    except FileError as e:
        raise DataError(str(e)) from None


def _decode(raw, path):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} "
                        f"is invalid (convert it, e.g. iconv -f latin1 -t utf-8)")
    text = text.removeprefix("\ufeff")
    if not text:
        raise DataError(f"{path} is empty: give a text file with something to learn from")
    return text


def token_dtype(vocab_size):
    """uint16 when every id fits in 16 bits, else uint32."""
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def _chunk_ends(text, size):
    """Cut points about `size` characters apart, each just after a newline that sits
    between two non-space characters, so regex pre-splitting sees the same pieces."""
    ends, start = [], 0
    while len(text) - start > size:
        nl = text.find("\n", start + size - 1)
        while nl != -1 and not (0 < nl < len(text) - 1 and not text[nl - 1].isspace()
                                and not text[nl + 1].isspace()):
            nl = text.find("\n", nl + 1)
        if nl == -1:
            break
        start = nl + 1
        ends.append(start)
    return ends + [len(text)]


def encode(text, tokenizer, chunk_chars=CHUNK_CHARS):
    """Token ids of `text` as a 1-D NumPy array (uint16 when the vocabulary fits).

    Long texts are encoded a chunk at a time (cut at line breaks) so no huge
    Python list is ever held. Raises DataError if the tokenizer cannot encode it.
    """
    dtype = token_dtype(tokenizer.vocab_size)
    # a BPE tokenizer with special tokens: "<|endoftext|>" in a corpus marks a document boundary
    options = {"allowed_special": "all"} if getattr(tokenizer, "special_tokens", None) else {}
    pieces, start = [], 0
    for end in _chunk_ends(text, chunk_chars):
        try:
            ids = tokenizer.encode(text[start:end], **options)
        except (KeyError, ValueError) as e:
            raise DataError(f"the tokenizer cannot encode this text: {e}")
        pieces.append(np.asarray(ids, dtype=dtype))
        start = end
    return np.concatenate(pieces)


def split(tokens, val_fraction=VAL_FRACTION):
    """The first (1 - val_fraction) of the tokens for training, the rest for validation."""
    n = int(len(tokens) * (1.0 - val_fraction))
    return tokens[:n], tokens[n:]


def min_tokens(block_size, val_fraction=VAL_FRACTION):
    """The fewest tokens whose train and val splits both exceed block_size."""
    n = 2 * (block_size + 1)
    while min(len(part) for part in split(range(n), val_fraction)) <= block_size:
        n += 1
    return n


def check_length(tokens, block_size, path, val_fraction=VAL_FRACTION):
    """DataError unless both splits hold more than block_size tokens (one full input + target)."""
    need = min_tokens(block_size, val_fraction)
    if len(tokens) < need:
        raise DataError(f"{path} is too short for block size {block_size}: it has {len(tokens)} "
                        f"tokens and needs at least {need} (use a longer text or a smaller --block-size)")


def get_batch(data, batch_size, block_size, rng):
    """A random batch of contiguous windows from a 1-D token array (or memmap).

    data: (N,) ids with N > block_size, or task examples (minigpt.task.Examples,
    one padded example per row); rng: a numpy Generator (host side).
    Returns x, y: (B, T) int64, where y is x shifted one token to the left.
    """
    if hasattr(data, "get_batch"):              # task examples pad and mask their own rows
        return data.get_batch(batch_size, block_size, rng)
    starts = rng.integers(0, len(data) - block_size, size=batch_size)
    window = starts[:, None] + np.arange(block_size + 1)      # (B, T + 1)
    chunk = np.asarray(data[window], dtype=np.int64)
    return chunk[:, :-1], chunk[:, 1:]


def load_corpus(path, cache_dir, make_tokenizer=None, key=None, tokenizer=None, write_cache=True):
    """Read (once), tokenize and cache a text file; a second call on the same file reuses
    the cache instead of tokenizing the text or building the tokenizer again.

    Give either make_tokenizer(text) -> tokenizer with `key`, a JSON-able
    description of how it is made (e.g. {"kind": "char"}), or a ready `tokenizer`.
    Returns (tokens (N,) array or memmap, tokenizer, from_cache bool, the text's
    SHA-256). The cache is `<cache_dir>/tokens.bin` (raw ids) plus `tokens.json`,
    which records the text's SHA-256, the key, the tokenizer that made the ids
    and the SHA-256 of tokens.bin; a cache whose tokens.bin does not match it,
    or holds an id outside the vocabulary, is rebuilt, never trusted. write_cache=False
    (an MPI rank other than 0, which owns the out-dir) reads a cache but never writes one.
    """
    raw = read_raw(path)
    ident = {"version": CACHE_VERSION, "sha256": hashlib.sha256(raw).hexdigest()}
    bin_path, meta_path = os.path.join(cache_dir, "tokens.bin"), os.path.join(cache_dir, "tokens.json")
    wanted = dict(ident, tokenizer=tokenizer.to_json()) if tokenizer is not None else dict(ident, key=key)
    cached = _read_cache(bin_path, meta_path, wanted)
    if cached is not None:
        return cached[0], cached[1], True, ident["sha256"]
    text = _decode(raw, path)
    del raw
    if tokenizer is None:
        tokenizer = make_tokenizer(text)
    tokens = encode(text, tokenizer)
    if not write_cache:
        return tokens, tokenizer, False, ident["sha256"]
    os.makedirs(cache_dir, exist_ok=True)
    atomic_write(bin_path, tokens.tofile)
    meta = dict(ident, key=key, dtype=tokens.dtype.name, count=int(len(tokens)),
                tokenizer=tokenizer.to_json(), tokens_sha256=hashlib.sha256(tokens.tobytes()).hexdigest())
    atomic_write(meta_path, lambda f: f.write(json.dumps(meta).encode("utf-8")))
    return tokens, tokenizer, False, ident["sha256"]


def _read_cache(bin_path, meta_path, wanted):
    """(memmap, tokenizer) from an intact cache whose metadata has every `wanted` entry, whose
    tokens.bin has the recorded digest and whose ids all fit the vocabulary; else None."""
    try:
        meta = loads_json(read_regular_text(meta_path, "token cache"))     # a FIFO: rebuilt, not waited on
        if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in wanted.items()):
            return None
        dtype = np.dtype(meta["dtype"])
        if (dtype not in (np.uint16, np.uint32) or not isinstance(meta["count"], int) or meta["count"] < 1
                or os.path.getsize(bin_path) != meta["count"] * dtype.itemsize
                or file_digest(bin_path) != meta["tokens_sha256"]):
            return None
        from .tokenizer import tokenizer_from_json
        tokenizer = tokenizer_from_json(meta["tokenizer"])
        tokens = np.memmap(bin_path, dtype=dtype, mode="r")
        if int(tokens.max()) >= tokenizer.vocab_size:
            return None
        return tokens, tokenizer
    except (OSError, ValueError, KeyError, TypeError):
        return None
