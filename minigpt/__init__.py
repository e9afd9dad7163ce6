"""minigpt: GPT-2 in NumPy, with every forward and backward pass written by hand."""
import os

# OpenBLAS's idle threads spin for ~0.1 s after every matrix product before they
# sleep, stealing a core from the elementwise threads that come next (see
# backend.py). OpenBLAS reads it when it loads; if NumPy loaded it before this
# line ran (`import numpy` first, as in a notebook), openblas.py makes OpenBLAS
# read it again. 2^4 cycles: sleep almost at once. A value the user set wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .model import GPT, GPTConfig  # noqa: E402

__all__ = ["GPT", "GPTConfig"]
__version__ = "0.1.0"
