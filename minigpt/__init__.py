"""minigpt: GPT-2 in NumPy, with every forward and backward pass written by hand."""
from .model import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
__version__ = "0.1.0"
