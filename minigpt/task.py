"""Fine-tuning for a task: (prompt, completion) pairs, the loss on the answer, exact match.

    pairs = read_examples("notebooks/data/roman_numerals.jsonl")   # checked line by line
    examples = encode_examples(pairs, tokenizer)      # prompt + completion + end marker, as ids
    train, val = data.split(examples)                 # by examples: the last 10% are held out
    x, y = train.get_batch(12, 64, rng)               # (B, T); y is -1 on the prompt and padding
    accuracy, answers = exact_match(model, val, 100)  # greedy answers, cut at the end marker

TASK.jsonl holds one JSON object per line, {"prompt": "...", "completion": "..."}.
An example becomes the tokens of its prompt, then its completion, then the end
marker: GPT-2's <|endoftext|> where the tokenizer has it, else a newline
(END_TEXT), so a character-level answer is one line. The targets of the prompt
positions are -1, which the cross-entropy ignores: the model is trained to
answer, not to write questions. Each example is one row of a batch, starting
at position 0 and padded at the end; attention is causal, so no real token
ever sees the padding or another example, and a padded row gives exactly the
logits the example gives alone. An example longer than the block size is
refused (with the count and the --block-size that would fit), never cut.
"""
import hashlib
import json
import time
from collections import defaultdict

import numpy as np

from .data import DataError, read_text, split
from .fileio import loads_json
from .sample import EOT, generate_tokens

END_TEXT = "\n"                # the end marker of tokenizers without <|endoftext|>


def is_task_file(path):
    """A .jsonl file holds task examples; any other file is text."""
    return str(path).lower().endswith(".jsonl")


def read_examples(path):
    """[(line number, prompt, completion), ...] from a JSONL file; DataError naming the line.

    Blank lines are skipped; keys other than prompt and completion are ignored.
    """
    pairs = []
    # lines end at "\n" only (str.splitlines would also split at U+2028 or U+0085 inside a string)
    for n, line in enumerate((line.rstrip("\r") for line in read_text(path).split("\n")), start=1):
        if not line.strip():
            continue
        try:
            obj = loads_json(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not JSON ({e.msg} at column {e.colno}): each line must be "
                            f'an object like {{"prompt": "...", "completion": "..."}}') from None
        except ValueError as e:                # nested too deep for the parser, or a repeated key
            raise DataError(f"{path}:{n}: {e}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{n}: a JSON {type(obj).__name__}, not an object with "
                            f'"prompt" and "completion"')
        for key in ("prompt", "completion"):
            if key not in obj:
                raise DataError(f'{path}:{n}: no "{key}" (each line needs "prompt" and "completion")')
            if not isinstance(obj[key], str):
                raise DataError(f'{path}:{n}: "{key}" is a {type(obj[key]).__name__}, not a string')
        if not obj["prompt"]:
            raise DataError(f'{path}:{n}: the prompt is empty: the answer needs something to follow')
        pairs.append((n, obj["prompt"], obj["completion"]))
    if len(pairs) < 2:
        raise DataError(f"{path} holds {len(pairs)} example{'s' * (len(pairs) != 1)}: it needs at "
                        f"least 2, so that one is left for validation")
    return pairs


def task_text(pairs):
    """All the text of the examples and the end marker: what a fresh tokenizer is built from."""
    return END_TEXT.join(p + c for _, p, c in pairs) + END_TEXT


def end_marker(tokenizer):
    """(text, id) of the end marker: <|endoftext|> if the tokenizer has it, else END_TEXT."""
    special = getattr(tokenizer, "special_tokens", None) or {}
    if EOT in special:
        return EOT, int(special[EOT])
    ids = tokenizer.encode(END_TEXT)
    if len(ids) != 1:
        raise DataError(f"this tokenizer encodes the end marker {END_TEXT!r} as {len(ids)} tokens, not 1")
    return END_TEXT, ids[0]


def encode_text(tokenizer, text):
    """Token ids of text; special-token text such as <|endoftext|> is read as ordinary text."""
    if getattr(tokenizer, "special_tokens", None):
        return tokenizer.encode(text, disallowed_special=())
    return tokenizer.encode(text)


class Examples:
    """Encoded task examples: texts, ids (prompt + completion + end marker) and prompt lengths.

    len() and slicing work by examples, so `data.split(examples)` holds out the last 10%."""

    def __init__(self, prompts, completions, ids, n_prompt, end_id, lines):
        self.prompts, self.completions, self.ids = prompts, completions, ids
        self.n_prompt, self.end_id, self.lines = np.asarray(n_prompt, dtype=np.int64), end_id, lines

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, s):
        if not isinstance(s, slice):
            raise TypeError("Examples are sliced, e.g. examples[:10]")
        return Examples(self.prompts[s], self.completions[s], self.ids[s], self.n_prompt[s],
                        self.end_id, self.lines[s])

    def get_batch(self, batch_size, block_size, rng, prompt_loss=False):
        """batch_size random examples as padded x, y: (B, T) int64, T the longest minus 1."""
        rows = rng.integers(0, len(self), size=batch_size)
        return pad_batch([self.ids[i] for i in rows], self.n_prompt[rows], prompt_loss)


def pad_batch(seqs, n_prompt, prompt_loss=False):
    """Rows of inputs and next-token targets, one example per row, padded at the end.

    seqs: token id sequences (prompt + completion + end marker); n_prompt: the
    prompt length of each. y is -1 (ignored) on padding and, unless
    prompt_loss, on the positions whose next token is still the prompt's.
    >>> x, y = pad_batch([[5, 6, 7, 9], [5, 7, 9]], [2, 1])
    >>> x.tolist(), y.tolist()
    ([[5, 6, 7], [5, 7, 0]], [[-1, 7, 9], [7, 9, -1]])
    """
    T = max(len(s) for s in seqs) - 1
    x = np.zeros((len(seqs), T), dtype=np.int64)
    y = np.full((len(seqs), T), -1, dtype=np.int64)
    for r, (s, p) in enumerate(zip(seqs, n_prompt)):
        n = len(s) - 1
        x[r, :n] = s[:-1]
        first = 0 if prompt_loss else p - 1          # position p - 1 predicts the first answer token
        y[r, first:n] = s[first + 1:]
    return x, y


def encode_examples(pairs, tokenizer, path="TASK.jsonl"):
    """Examples from read_examples' pairs; DataError for a completion holding the end marker
    or text the tokenizer cannot encode."""
    marker, end_id = end_marker(tokenizer)
    prompts, completions, ids, n_prompt, lines = [], [], [], [], []
    for n, prompt, completion in pairs:
        if marker in completion:
            raise DataError(f"{path}:{n}: the completion contains the end marker {marker!r}, so the "
                            f"answer would end there: remove it from the completion")
        try:
            p, c = encode_text(tokenizer, prompt), encode_text(tokenizer, completion)
        except (KeyError, ValueError) as e:
            raise DataError(f"{path}:{n}: the tokenizer cannot encode this example ({e})") from None
        prompts.append(prompt)
        completions.append(completion)
        ids.append(np.array(p + c + [end_id], dtype=np.int64))
        n_prompt.append(len(p))
        lines.append(n)
    return Examples(prompts, completions, ids, n_prompt, end_id, lines)


def check_fit(examples, block_size, path, fixed_by=None):
    """DataError unless every example fits the block: its tokens minus one <= block_size."""
    need = np.array([len(s) - 1 for s in examples.ids])
    long = np.flatnonzero(need > block_size)
    if len(long):
        fix = (f"the block size is fixed by {fixed_by}: shorten them" if fixed_by
               else f"give --block-size {need.max()} to fit them")
        raise DataError(f"{path}: {len(long)} example{'s' * (len(long) > 1)} (the first on line "
                        f"{examples.lines[long[0]]}) {'are' if len(long) > 1 else 'is'} longer than "
                        f"the block size {block_size} (the longest needs {need.max()}): {fix}")

# ---------------------------------------------------------------- scoring


def greedy_answers(model, prompt_ids, end_id):
    """The greedy continuation of each prompt up to (not including) end_id, or None if none came.

    Prompts of equal length run as one batch with the KV cache; each stops at
    block_size + 1 - len(prompt) new tokens, the longest answer training had.
    """
    by_length = defaultdict(list)
    for i, p in enumerate(prompt_ids):
        by_length[len(p)].append(i)
    answers = [None] * len(prompt_ids)
    for length, rows in by_length.items():
        idx = np.array([prompt_ids[i] for i in rows], dtype=np.int64)       # (B, T)
        out, done = [[] for _ in rows], np.zeros(len(rows), dtype=bool)
        for nxt in generate_tokens(model, idx, model.config.block_size + 1 - length, temperature=0):
            for r in np.flatnonzero(~done):
                if nxt[r] == end_id:
                    done[r], answers[rows[r]] = True, out[r]
                else:
                    out[r].append(int(nxt[r]))
            if done.all():
                break
    return answers


def exact_match(model, examples, n, tokenizer):
    """Exact-match accuracy of greedy answers on the first n examples (all if n is None).

    Returns (accuracy in [0, 1], [(prompt, completion, answer text or None, right), ...]).
    An answer is right when the model ends it with the end marker and its text
    equals the completion exactly."""
    n = len(examples) if n is None else min(n, len(examples))
    prompts = [examples.ids[i][:examples.n_prompt[i]] for i in range(n)]
    results = []
    for i, ans in enumerate(greedy_answers(model, prompts, examples.end_id)):
        text = None if ans is None else tokenizer.decode(ans)
        results.append((examples.prompts[i], examples.completions[i], text, text == examples.completions[i]))
    return sum(r[3] for r in results) / max(n, 1), results


def answer_time(run, n):
    """Seconds that answering the first n held-out prompts should take, for a time budget:
    one greedy step, timed now, times the steps: the longest training answer (with its
    end marker) for each group of equal-length prompts."""
    val, train = run.val_tokens[:n], run.train_tokens
    steps = len(set(val.n_prompt.tolist())) * max(len(s) - p for s, p in zip(train.ids, train.n_prompt))
    prompt = val.ids[0][None, :val.n_prompt[0]]
    t = time.perf_counter()
    for _ in generate_tokens(run.model, prompt, 4, temperature=0):
        pass
    return steps * (time.perf_counter() - t) / 4


def format_answers(results, k=3):
    """Up to k scored answers as lines: "'prompt' -> 'answer' right" or "... wrong, expected 'completion'".

    An answer that never reached the end marker (None) is shown as (no end marker)."""
    lines = []
    for prompt, completion, answer, right in results[:k]:
        shown = "(no end marker)" if answer is None else repr(answer)
        lines.append(f"{prompt!r} -> {shown} " + ("right" if right else f"wrong, expected {completion!r}"))
    return lines

# ---------------------------------------------------------------- the training command's data


def add_characters(model, tokenizer, chars, seed=0):
    """A char tokenizer with `chars` added, and the model's embedding grown to match.

    CharTokenizer keeps its characters sorted, so ids move: each old character's
    row of wte moves with it; the new characters get fresh N(0, 0.02) rows."""
    from .tokenizer import CharTokenizer
    grown = CharTokenizer(tokenizer.chars + "".join(chars))
    old = model.params["wte.weight"]
    wte = np.random.default_rng(seed).normal(0.0, 0.02, size=(grown.vocab_size, old.shape[1])).astype(old.dtype)
    for ch, i in tokenizer.stoi.items():
        wte[grown.stoi[ch]] = old[i]
    model.params["wte.weight"] = wte
    model.config.vocab_size = grown.vocab_size
    return grown


def load_task(args, tokenizer=None, model=None, source=None, resumed=False):
    """Examples, tokenizer and model for `python -m minigpt.train TASK.jsonl`.

    A fresh run builds its tokenizer from the examples' text (--tokenizer). A
    run from a checkpoint (source) keeps its tokenizer; a char tokenizer that
    lacks characters of the task gets them added, with new embedding rows,
    except when resuming. Sets args.end_marker, which the checkpoint records
    so that `python -m minigpt.sample` stops there. Returns (examples, tokenizer,
    SHA-256 of the examples), the digest that --resume checks."""
    from .tokenizer import CharTokenizer, build_tokenizer
    pairs = read_examples(args.file)
    text = task_text(pairs)
    if tokenizer is None:
        tokenizer = build_tokenizer(args.tokenizer, text, args.vocab_size)
    elif isinstance(tokenizer, CharTokenizer):
        missing = sorted(set(text) - set(tokenizer.chars))
        if missing and (resumed or model is None):
            raise DataError(f"{args.file} uses {len(missing)} characters this run's tokenizer lacks "
                            f"({''.join(missing)[:20]!r}): start a new run for them")
        if missing:
            tokenizer = add_characters(model, tokenizer, missing, args.seed)
            print(f"tokenizer: added {len(missing)} characters that {args.file} uses and {source} "
                  f"lacks ({''.join(missing)[:20]!r}); their embeddings start random")
    examples = encode_examples(pairs, tokenizer, args.file)
    check_fit(examples, args.block_size, args.file, fixed_by=source)
    args.end_marker, _ = end_marker(tokenizer)
    n_val = len(split(examples)[1])
    print(f"data: {args.file}: {len(examples)} examples ({len(examples) - n_val} to train on, the last "
          f"{n_val} held out), {sum(map(len, examples.ids)):,} tokens, vocabulary {tokenizer.vocab_size}, "
          f"end marker {args.end_marker!r}")
    digest = hashlib.sha256(json.dumps([pair[1:] for pair in pairs]).encode("utf-8")).hexdigest()
    return examples, tokenizer, digest
