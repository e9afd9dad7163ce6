"""Read and write the `.safetensors` format with NumPy alone.

A safetensors file is three parts, back to back:

    8 bytes     N, the header length, an unsigned little-endian integer
    N bytes     a JSON object (UTF-8, maybe padded with spaces):
                {"wte.weight": {"dtype": "F32", "shape": [50257, 768],
                                "data_offsets": [0, 154389504]}, ...,
                 "__metadata__": {"format": "pt"}}        (optional, str -> str)
    the rest    the raw little-endian tensor bytes; each tensor's
                data_offsets [begin, end) count from the start of this part

Nothing in it can run code (unlike a pickle), and this reader trusts nothing:
the dtype must be known, the shape must match the byte count, every offset
must lie inside the file, and the tensors must tile the data exactly, with no
overlap and no gap. Anything else is a SafetensorsError naming the problem.
"""
import json
import math
import os

import numpy as np

from .backend import to_numpy
from .fileio import FileError, atomic_write, loads_json, open_regular

MAX_HEADER_BYTES = 100_000_000   # the reference implementation's limit

# safetensors dtype code -> NumPy dtype (little-endian). BF16 has no NumPy
# dtype: it is read as uint16 and widened to float32 (see _bf16_to_float32).
DTYPES = {
    "BOOL": np.dtype("bool"), "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "U32": np.dtype("<u4"), "I32": np.dtype("<i4"), "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"), "F64": np.dtype("<f8"),
}
CODES = {dt.newbyteorder("<"): code for code, dt in DTYPES.items() if code != "BF16"}


class SafetensorsError(ValueError):
    """A safetensors file is missing, truncated, or its header does not describe its data."""


def _bf16_to_float32(raw):
    """bfloat16 is the top half of a float32: shift its 16 bits up and reinterpret.

    >>> _bf16_to_float32(np.array([0x3F80, 0xC000], dtype=np.uint16))
    array([ 1., -2.], dtype=float32)
    """
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _parse_header(path, raw, data_len):
    """Check a raw header against the data length; returns (tensors, metadata)."""
    def dup_check(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise SafetensorsError(f"{path}: header repeats a key")
        return dict(pairs)
    try:
        header = loads_json(raw.decode("utf-8"), object_pairs_hook=dup_check)
    except (UnicodeDecodeError, ValueError) as e:
        if isinstance(e, SafetensorsError):
            raise
        raise SafetensorsError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings")
    tensors = {}
    for name, info in header.items():
        tensors[name] = _check_entry(path, name, info, data_len)
    spans = sorted((t["begin"], t["end"], name) for name, t in tensors.items())
    at = 0
    for begin, end, name in spans:
        if begin != at:
            raise SafetensorsError(f"{path}: tensor {name!r} starts at byte {begin}, expected {at} "
                                   f"(tensors overlap or leave a gap)")
        at = end
    if at != data_len:
        raise SafetensorsError(f"{path}: tensors cover {at} bytes but the data part holds "
                               f"{data_len} (a gap at the end)")
    return tensors, metadata


def _check_entry(path, name, info, data_len):
    """One header entry, checked: returns {"dtype", "shape", "begin", "end"}."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise SafetensorsError(f"{where} needs exactly dtype, shape and data_offsets")
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if code not in DTYPES:
        raise SafetensorsError(f"{where} has dtype {code!r}, which minigpt does not read "
                               f"(known: {', '.join(DTYPES)})")

    def is_count(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if not isinstance(shape, list) or not all(is_count(d) for d in shape):
        raise SafetensorsError(f"{where} has shape {shape!r}: need a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(is_count(o) for o in offsets)
            or offsets[0] > offsets[1]):
        raise SafetensorsError(f"{where} has data_offsets {offsets!r}: need [begin, end], begin <= end")
    begin, end = offsets
    nbytes = math.prod(shape) * DTYPES[code].itemsize
    if end - begin != nbytes:
        raise SafetensorsError(f"{where}: {code} {shape} needs {nbytes} bytes, "
                               f"data_offsets give {end - begin}")
    if end > data_len:
        raise SafetensorsError(f"{where} ends at byte {end} but the data part holds only "
                               f"{data_len} (truncated file?)")
    return {"dtype": code, "shape": tuple(shape), "begin": begin, "end": end}


def _open_header(path, f):
    """Read and check the header of the open file f; returns (tensors, metadata, data_start)."""
    size = os.fstat(f.fileno()).st_size
    if size < 8:
        raise SafetensorsError(f"{path}: {size} bytes is too short to be a safetensors file")
    n = int.from_bytes(f.read(8), "little")
    if n > MAX_HEADER_BYTES:
        raise SafetensorsError(f"{path}: header length {n} is over the {MAX_HEADER_BYTES}-byte limit "
                               f"(not a safetensors file?)")
    if 8 + n > size:
        raise SafetensorsError(f"{path}: header length {n} runs past the end of the "
                               f"{size}-byte file (truncated?)")
    tensors, metadata = _parse_header(path, f.read(n), size - 8 - n)
    return tensors, metadata, 8 + n


def _open(path):
    try:
        return open_regular(path, "safetensors file")     # a FIFO is refused, not waited on
    except FileError as e:                     # missing, a folder, a FIFO or a device
        raise SafetensorsError(f"cannot read {path} ({e})") from None
    except OSError as e:
        raise SafetensorsError(f"cannot read {path}: {e.strerror or e}") from None


def read_header(path):
    """The checked header alone: ({name: {"dtype", "shape", ...}}, metadata). Reads no tensors."""
    with _open(path) as f:
        tensors, metadata, _ = _open_header(path, f)
    return tensors, metadata


def load_file(path, names=None):
    """Read tensors from a safetensors file into host NumPy arrays.

    names: the tensors to read (all if None). BF16 comes back as float32,
    every other dtype as itself. Returns (tensors: {name: array}, metadata).
    """
    with _open(path) as f:
        tensors, metadata, start = _open_header(path, f)
        wanted = list(tensors) if names is None else list(names)
        out = {}
        for name in wanted:
            if name not in tensors:
                raise SafetensorsError(f"{path}: no tensor named {name!r}")
            t = tensors[name]
            arr = np.empty(t["shape"], dtype=DTYPES[t["dtype"]])
            f.seek(start + t["begin"])
            if arr.nbytes and f.readinto(arr.reshape(-1).view(np.uint8)) != arr.nbytes:
                raise SafetensorsError(f"{path}: tensor {name!r} is cut short (file changed?)")
            if t["dtype"] == "BF16":
                arr = _bf16_to_float32(arr)
            elif not arr.dtype.isnative:
                arr = arr.astype(arr.dtype.newbyteorder("="))
            out[name] = arr
    return out, metadata


def save_file(tensors, path, metadata=None):
    """Write {name: array} (NumPy or CuPy) and optional {str: str} metadata to path, atomically.

    Tensors are laid out largest item size first, so each starts aligned to
    its own item size (the header is padded with spaces to a multiple of 8).
    """
    arrays = {}
    for name, a in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise SafetensorsError(f"tensor name {name!r} is not allowed")
        a = to_numpy(a)
        a = a if a.flags.c_contiguous else a.copy(order="C")   # (ascontiguousarray makes 0-d 1-d)
        if a.dtype.newbyteorder("<") not in CODES:
            raise SafetensorsError(f"tensor {name!r} has dtype {a.dtype}, which safetensors cannot hold")
        arrays[name] = a.astype(a.dtype.newbyteorder("<"), copy=False)
    order = sorted(arrays, key=lambda k: (-arrays[k].dtype.itemsize, k))
    header, at = {}, 0
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise SafetensorsError("metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    for name in order:
        a = arrays[name]
        header[name] = {"dtype": CODES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [at, at + a.nbytes]}
        at += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    def write(f):
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name in order:
            f.write(arrays[name].reshape(-1).view(np.uint8))
    atomic_write(path, write)
