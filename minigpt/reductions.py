"""Row and column reductions, fast on short rows.

    row_means(x)      x.mean(axis=-1, keepdims=True)
    row_sums(x, s)    s * x.sum(axis=-1, keepdims=True)
    row_dots(x, y)    (x * y).sum(axis=-1, keepdims=True)
    column_sums(x)    x.sum(axis=0) of a 2-D x

Sums are products with a vector of ones (BLAS), and row dot products use einsum
(one pass, no temporary): NumPy's x.sum(axis=-1) walks short rows one at a time.
Measured here, 2048 rows of 384: row means 0.22 -> 0.05 ms, (x * y).sum(axis=-1)
0.26 -> 0.13 ms; column sums of (2048, 1536) 0.29 -> 0.11 ms.
"""
from functools import lru_cache

from .backend import array_module


def row_means(x, out=None):
    """Means over the last axis, kept as an axis of 1: x.mean(axis=-1, keepdims=True)."""
    return row_sums(x, 1.0 / x.shape[-1], out)


def row_sums(x, scale=1.0, out=None):
    """scale * x.sum(axis=-1, keepdims=True): x @ a column of `scale`s; into out if given.

    x (and out) must be contiguous (every block parallel_rows hands out is)."""
    xp = array_module(x)
    C = x.shape[-1]
    column = _filled(xp, (C, 1), scale, x.dtype)
    sums = xp.matmul(x.reshape(-1, C), column, out=None if out is None else out.reshape(-1, 1))
    return sums.reshape(*x.shape[:-1], 1)


def row_dots(x, y):
    """Dot products of matching rows (last axis) of x and y: (x * y).sum(axis=-1, keepdims=True)."""
    return array_module(x).einsum("...j,...j->...", x, y)[..., None]


def column_sums(x):
    """(C,) sums over the rows of a 2-D x: a row of ones @ x."""
    xp = array_module(x)
    return _filled(xp, (x.shape[0],), 1.0, x.dtype) @ x


@lru_cache(maxsize=64)
def _filled(xp, shape, value, dtype):
    """A constant array, made once per shape (read-only by convention)."""
    return xp.full(shape, value, dtype=dtype)
