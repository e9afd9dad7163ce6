"""Generate text: greedy, temperature, top-k, top-p, with a KV cache; `python -m minigpt.sample`.

    python -m minigpt.sample --ckpt out/ckpt.npz --prompt "ROMEO:" --top-k 200 --seed 1
    python -m minigpt.sample --pretrained path/to/gpt2 --prompt "Hello, I'm a language model,"
    python -m minigpt.sample --ckpt out/ckpt.npz --interactive     # a prompt per line (minigpt.chat)

Each step turns the last position's logits into probabilities (temperature,
then top-k, then top-p), draws the next token with a host-side NumPy
Generator, and feeds it back. With the cache (minigpt.kvcache) a step costs
one position's work; without it the whole context is recomputed. The text is
printed as it is generated.
"""

if __name__ == "__main__" and not __package__:    # `python minigpt/sample.py`: run it as a module
    import os, runpy, sys                           # noqa: E401 (before any relative import)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("minigpt.sample", run_name="__main__", alter_sys=True)
    sys.exit(0)

import argparse
import math
import os
import sys

import numpy as np

from .backend import DeviceError, array_module, enable_tf32, resolve_device, to_numpy
from .kvcache import KVCache, forward_cached
from .model import check_ids

EOT = "<|endoftext|>"

# ---------------------------------------------------------------- choosing a token


def filter_logits(logits, temperature=1.0, top_k=None, top_p=None):
    """Turn one row of logits (V,) into sampling probabilities (host NumPy, float64).

    temperature <= 0 (or None) means greedy: all mass on the arg-max. Otherwise
    the logits are divided by temperature; top_k keeps the k most likely
    tokens; top_p then keeps the smallest set of most likely tokens whose mass
    reaches p (the most likely token always stays). Returns probs (V,), sum 1.
    """
    logits = np.asarray(logits, dtype=np.float64)
    V = logits.shape[-1]
    if temperature is None or temperature <= 0:
        probs = np.zeros(V)
        probs[int(np.argmax(logits))] = 1.0
        return probs
    raw = logits
    with np.errstate(over="ignore"):           # a tiny temperature: -inf, never inf - inf = NaN
        logits = (logits - logits.max()) / temperature
    if top_k is not None and 0 < top_k < V:
        # chosen on the raw logits: the shift above can round near-ties together (0 and -1e-226)
        keep = np.argpartition(-raw, top_k - 1)[:top_k]         # exactly k, ties broken arbitrarily
        kept = np.full(V, -np.inf)
        kept[keep] = logits[keep]
        logits = kept
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if top_p is not None and 0 < top_p < 1:
        order = np.argsort(-probs, kind="stable")
        before = np.cumsum(probs[order]) - probs[order]       # mass of strictly more likely tokens
        drop = order[before >= top_p]
        probs[drop] = 0.0
        probs /= probs.sum()
    return probs


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, rng=None):
    """One token per row of logits (B, V) -> (B,) int64; greedy takes no randomness."""
    logits = np.asarray(logits)
    if temperature is None or temperature <= 0:
        return np.argmax(logits, axis=-1).astype(np.int64)
    rng = rng if rng is not None else np.random.default_rng()
    return np.array([rng.choice(row.shape[-1], p=filter_logits(row, temperature, top_k, top_p))
                     for row in logits], dtype=np.int64)

# ---------------------------------------------------------------- the generation loop


def _next_logits(model, seq, cache):
    """Logits (B, V) on the host for the token after seq (B, T) on the host."""
    xp = array_module(model.params["wte.weight"])
    block = model.config.block_size
    if cache is None:                              # recompute the whole (cropped) context
        logits, _, _ = model.forward(xp.asarray(seq[:, -block:]))
    elif cache.length in (0, block):               # empty, or full: (re)fill from the last block
        cache.reset()                              # tokens (positions are absolute, so a full
        logits = forward_cached(model, xp.asarray(seq[:, -block:]), cache, last_only=True)
    else:                                          # cache slides by recomputing on the crop)
        logits = forward_cached(model, xp.asarray(seq[:, -1:]), cache, last_only=True)
    return to_numpy(logits[:, -1])


def generate_tokens(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                    rng=None, use_cache=True, vocab_size=None, stop=None):
    """Yield max_new_tokens next tokens, one step at a time, each a host (B,) int64 array.

    idx: (B, T) integer ids in 0..V-1, T >= 1 (host or device; only the last
    block_size are seen). rng: a numpy Generator (host side). use_cache: False
    recomputes the whole context each step (same tokens, slower). vocab_size:
    draw only ids below it (a tokenizer smaller than the model's padded
    vocabulary cannot decode the others). stop: a function of no arguments; once it returns
    True no more tokens are drawn (a run asked to stop by a signal ends its sample at once).
    """
    seq = to_numpy(idx)
    if seq.ndim != 2 or seq.shape[1] == 0:
        raise ValueError(f"idx must be (B, T) token ids with T >= 1, got shape {seq.shape}")
    check_ids(seq, model.config.vocab_size)
    seq = np.array(seq, dtype=np.int64)
    rng = rng if rng is not None else np.random.default_rng()
    cache = KVCache(model, seq.shape[0]) if use_cache else None
    for _ in range(max_new_tokens):
        if stop is not None and stop():
            return
        logits = _next_logits(model, seq, cache)[:, :vocab_size]
        nxt = sample_next(logits, temperature, top_k, top_p, rng)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
        yield nxt


def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, rng=None,
             use_cache=True, vocab_size=None, stop=None):
    """Append max_new_tokens sampled tokens to idx (B, T); returns host int64 (B, T + new),
    fewer new ones if stop() (see generate_tokens) became True first."""
    out = [np.array(to_numpy(idx), dtype=np.int64)]
    for nxt in generate_tokens(model, idx, max_new_tokens, temperature, top_k, top_p, rng, use_cache,
                               vocab_size, stop):
        out.append(nxt[:, None])
    return np.concatenate(out, axis=1)

# ---------------------------------------------------------------- printing as we go


class TextStream:
    """Token ids in, printable text out, piece by piece; stops at a stop string.

    A BPE token may end in the middle of a multi-byte character, which decodes
    to U+FFFD until the next token completes it: such tokens are held back (up
    to 4, the longest UTF-8 character). Text that might be the start of a stop
    string is held back too. The stop string itself is never returned.
    """

    def __init__(self, tokenizer, stop=()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.pending = []      # ids whose text may still end in half a character
        self.held = ""         # text that could begin a stop string
        self.stopped = False

    def push(self, token):
        """Add one token id; returns the text that is now safe to print."""
        if self.stopped:
            return ""
        self.pending.append(int(token))
        text = self.tokenizer.decode(self.pending)
        if text.endswith("\ufffd") and len(self.pending) < 4:
            return ""
        self.pending = []
        return self._release(text)

    def finish(self):
        """Everything still held back (at the end of generation)."""
        out = ""
        if self.pending and not self.stopped:
            out = self._release(self.tokenizer.decode(self.pending))
        self.pending = []
        if not self.stopped:
            out, self.held = out + self.held, ""
        return out

    def _release(self, text):
        text = self.held + text
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped, self.held = True, ""
            return text[:min(hits)]
        keep = 0
        for k in range(min(len(text), max((len(s) for s in self.stop), default=1) - 1), 0, -1):
            if any(s.startswith(text[-k:]) for s in self.stop):
                keep = k
                break
        self.held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]


def eot_id(tokenizer):
    """The id of <|endoftext|> in this tokenizer, or None if it has none."""
    special = getattr(tokenizer, "special_tokens", None)
    if isinstance(special, dict) and EOT in special:
        return int(special[EOT])
    return None

# ---------------------------------------------------------------- the command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):                      # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _checked(kind, ok, need):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {need}")
        return value
    return parse


def build_parser():
    p = _Parser(prog="python -m minigpt.sample", description="Generate text from a minigpt "
                "checkpoint or from GPT-2 weights in a Hugging Face directory.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="a checkpoint written by python -m minigpt.train")
    src.add_argument("--pretrained", metavar="DIR", help="a GPT-2 directory (config.json, "
                     "model.safetensors, vocab.json + merges.txt)")
    p.add_argument("--prompt", default="", help="text to continue (default: <|endoftext|> for "
                   "GPT-2 tokenizers, a newline otherwise)")
    p.add_argument("--interactive", action="store_true",
                   help="load the model once, then read one prompt per line from standard input (a "
                        "terminal or a pipe) and stream each answer with these settings; an empty line "
                        "or end of input (Ctrl-D) ends")
    p.add_argument("--max-new-tokens", type=_checked(int, lambda v: 1 <= v <= 10**9, "in 1..10**9"),
                   default=500, help="tokens to generate per sample (default 500)")
    p.add_argument("--temperature", type=_checked(float, lambda v: 0 <= v < math.inf, "0 or more"),
                   default=0.8, help="below 1 sharper, above 1 flatter, 0 greedy (default 0.8)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--top-k", type=_checked(int, lambda v: 1 <= v <= 10**9, "in 1..10**9"), default=200,
                   help="sample only among the k most likely tokens (default 200)")
    p.add_argument("--top-p", type=_checked(float, lambda v: 0 < v <= 1, "in (0, 1]"), default=1.0,
                   help="sample only among the most likely tokens holding mass p (default 1: off)")
    p.add_argument("--seed", type=_checked(int, lambda v: 0 <= v < 2**63, "in 0..2**63-1"), default=None,
                   help="random seed, for a reproducible sample (default: fresh each run)")
    p.add_argument("--num-samples", type=_checked(int, lambda v: 1 <= v <= 10**6, "in 1..10**6"), default=1,
                   help="how many samples to print (default 1)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop a sample when this text appears (not printed); repeatable")
    p.add_argument("--ignore-eot", action="store_true",
                   help="keep going past <|endoftext|> (or a task model's end marker, a newline for "
                        "char tokenizers) instead of stopping there")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute the whole context each step (slower; same tokens)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="where to run the model (default auto: cuda if CuPy sees a GPU)")
    p.add_argument("--tf32", action="store_true",
                   help="on the GPU, TF32 tensor-core matmuls: faster, their inputs rounded to a 10-bit "
                        "mantissa (default: strict float32; an error on the CPU)")
    return p


def _fail(message):
    """The one way this command ends on an expected failure: one line on stderr, status 2."""
    print(f"python -m minigpt.sample: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _load(args):
    """(model, tokenizer, prompt ids) from the flags; raises for anything the user can get wrong."""
    if "" in args.stop:
        raise ValueError('--stop "" would stop before the first token: give the text to stop at')
    device = resolve_device(args.device)           # before loading: a device error comes first
    if args.tf32:
        enable_tf32(device)
    marker = None                                  # a task model's end marker (docs/finetune.md)
    if args.ckpt is not None:
        from .checkpoint import load_checkpoint
        ck = load_checkpoint(args.ckpt, optimizer=False)    # the AdamW moments are not needed
        model, tokenizer, marker = ck["model"], ck["tokenizer"], (ck["train_args"] or {}).get("end_marker")
        if tokenizer is None:
            raise ValueError(f"{args.ckpt} holds no tokenizer, so a prompt cannot be encoded")
    else:
        from .pretrained import load_pretrained
        model, tokenizer = load_pretrained(args.pretrained)
    model.to(device)
    eot = eot_id(tokenizer)
    end = eot if eot is not None or not isinstance(marker, str) else _single_id(tokenizer, marker)
    return model, tokenizer, encode_prompt(tokenizer, args.prompt), end


def encode_prompt(tokenizer, prompt):
    """The ids of a prompt (special tokens allowed where the tokenizer has <|endoftext|>); an
    empty prompt starts from <|endoftext|>, else from a newline. ValueError if it cannot."""
    eot = eot_id(tokenizer)
    if prompt:
        try:
            ids = (tokenizer.encode(prompt, allowed_special="all") if eot is not None
                   else tokenizer.encode(prompt))
        except (KeyError, ValueError) as e:
            raise ValueError(f"the prompt cannot be encoded by this model's tokenizer ({e})") from None
    elif eot is not None:
        ids = [eot]
    else:
        try:
            ids = tokenizer.encode("\n")
        except (KeyError, ValueError):
            raise ValueError("give a --prompt: this tokenizer has no newline to start from") from None
    if not ids:
        raise ValueError("the prompt encodes to no tokens")
    return ids


def _single_id(tokenizer, text):
    """The id of a one-token text (a task model's end marker), or None."""
    try:
        ids = tokenizer.encode(text)
    except (KeyError, ValueError):
        return None
    return ids[0] if len(ids) == 1 else None


def main(argv=None):
    from .checkpoint import CheckpointError
    args = build_parser().parse_args(argv)
    try:
        return _sample(args)
    except (CheckpointError, DeviceError, OSError, ValueError) as e:   # every expected failure
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except MemoryError:
        _fail("not enough memory for this model")
    except KeyboardInterrupt:                      # Ctrl-C while loading: nothing to clean up
        print(file=sys.stderr)
        return 130


def _sample(args):
    """Load, then print each sample as it is generated; returns the exit status."""
    if sys.stdout is None:
        raise ValueError("standard output is closed: there is nowhere to print the sample")
    if args.interactive and (args.prompt or sys.stdin is None):
        raise ValueError("--interactive reads its prompts from standard input: drop --prompt" if
                         args.prompt else "standard input is closed: there are no prompts to read")
    model, tokenizer, ids, end = _load(args)
    write = Writer(args, model, tokenizer, end)
    try:
        if args.interactive:
            from .chat import session
            return session(lambda line: write(encode_prompt(tokenizer, line)), sys.stdin, sys.stdout)
        write(ids, echo=args.prompt)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return 130
    except BrokenPipeError:                        # e.g. piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


class Writer:
    """Prints --num-samples samples after prompt ids, token by token, with the flags' settings
    (kept for every prompt of an interactive session, one random generator for all)."""

    def __init__(self, args, model, tokenizer, end, out=None):
        self.args, self.model, self.tokenizer, self.out = args, model, tokenizer, out or sys.stdout
        self.temperature = 0.0 if args.greedy else args.temperature
        self.eot = None if args.ignore_eot else end
        self.rng = np.random.default_rng(args.seed)

    def __call__(self, ids, echo=""):
        a, out = self.args, self.out
        for n in range(a.num_samples):
            if n:
                out.write("\n" + "-" * 16 + "\n")
            out.write(echo)
            out.flush()
            stream = TextStream(self.tokenizer, a.stop)
            for nxt in generate_tokens(self.model, np.array([ids]), a.max_new_tokens, self.temperature,
                                       a.top_k, a.top_p, self.rng, use_cache=not a.no_cache,
                                       vocab_size=self.tokenizer.vocab_size):
                if self.eot is not None and int(nxt[0]) == self.eot:
                    break
                out.write(stream.push(nxt[0]))
                out.flush()
                if stream.stopped:
                    break
            out.write(stream.finish() + "\n")
            out.flush()


if __name__ == "__main__":
    sys.exit(main())
