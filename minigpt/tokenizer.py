"""Tokenizers: the text -> token ids -> text step in front of the model.

    CharTokenizer   one token per distinct character of the training text
    BPETokenizer    byte-level byte pair encoding with a regex pre-split: train
                    your own, or load OpenAI's GPT-2 files and match tiktoken exactly

Both have encode/decode, `vocab_size`, `to_json` and save/load. A BPE tokenizer
first cuts text into chunks with a regex (words, numbers, punctuation,
whitespace), so merges never cross a chunk boundary. Each chunk starts as its
UTF-8 bytes, one token per byte, and the learned merges are applied lowest rank
first. A merge's rank is the id it makes: merges learned earlier come first.

    >>> tok = BPETokenizer.from_gpt2()
    >>> tok.encode("hello world")
    [31373, 995]
    >>> tok.decode([31373, 995])
    'hello world'
"""
import json
import re
from collections import Counter
from itertools import chain

import regex

from .bpe_encode import ChunkCache, merge_by_rank  # noqa: F401 (merge_by_rank: imported from here too)
from .bpe_gpt2 import (ASCII_SPACE, ENDOFTEXT, GPT2_ASCII_SPLIT_PATTERN, GPT2_ASSETS,  # noqa: F401
                       bytes_to_unicode, read_gpt2_files, split_mostly_ascii)
from .bpe_train import N_BYTES, learn_merges, merge
from .fileio import atomic_write, loads_versioned, read_regular_text

# GPT-2's pre-split: contractions, letters, digits, other symbols, whitespace. A space
# sticks to the word after it, so a run of spaces leaves its last one to the next word:
# "a   b" -> ["a", "  ", " b"].
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ASCII_TWINS = {GPT2_SPLIT_PATTERN: GPT2_ASCII_SPLIT_PATTERN}    # pattern -> its `re` twin
# GPT-4's pre-split, as in tiktoken's cl100k_base: contractions in any case, digits in
# groups of at most three, newlines apart from other whitespace (++ is "no backtracking").
GPT4_SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"""
                      r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")

NO_MERGE = 1 << 62                # rank of a pair that never merges: above every token id
CACHE_MAX_CHUNKS = 500_000        # encode's chunk -> ids cache is emptied beyond this size
FILE_FORMAT = "minigpt-tokenizer"
FILE_VERSION = 1


def split_on_specials(text, specials):
    """Cut text around the special tokens: [text, special, text, special, ..., text].

    >>> split_on_specials("a<|endoftext|>b", ["<|endoftext|>"])
    ['a', '<|endoftext|>', 'b']
    """
    longest_first = sorted(specials, key=len, reverse=True)
    return regex.split("(" + "|".join(map(regex.escape, longest_first)) + ")", text)


def _replace_lone_surrogates(text):
    """Replace each lone surrogate (UTF-8 cannot encode it) by U+FFFD, as tiktoken does.

    >>> _replace_lone_surrogates("a\\ud800b") == "a\\ufffdb"
    True
    """
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _as_int_list(ids):
    """Token ids from any iterable of ints (a list, a NumPy array, ...) as a list of ints."""
    return ids.tolist() if hasattr(ids, "tolist") else list(ids)


PATTERN_PROBE = "Hello, world! It's 2026:\n  x_1 = (a+b)*3.5;\tdone?\u00e9\u4e2d \U0001F600\n"


def check_ids(byte_ids, n_merges, specials):
    """ValueError unless the ids are 0..255 for the bytes (in any order), then one per merge,
    then the special tokens with no gap and none repeated: the one rule for every BPE file read
    (a minigpt tokenizer, a checkpoint's, GPT-2's vocab.json)."""
    _check(isinstance(byte_ids, list) and all(type(b) is int for b in byte_ids)
           and sorted(byte_ids) == list(range(N_BYTES)),
           '"byte_ids" must be a permutation of 0..255')
    first_special = N_BYTES + n_merges
    _check(isinstance(specials, dict)
           and all(isinstance(s, str) and s and type(t) is int for s, t in specials.items())
           and sorted(specials.values()) == list(range(first_special, first_special + len(specials))),
           f'"special_tokens" must map strings to the ids {first_special}, {first_special} + 1, ... '
           f'(no gaps, none repeated), got {specials!r:.80}')


def _check(condition, problem):
    """Raise ValueError("corrupt tokenizer: <problem>") unless condition holds."""
    if not condition:
        raise ValueError(f"corrupt tokenizer: {problem}")


class Tokenizer:
    """What every tokenizer shares: one versioned JSON text file, never a pickle."""

    def save(self, path):
        """Write the tokenizer to `path` as human-readable JSON text (`to_json()`)."""
        text = self.to_json().encode("utf-8")
        atomic_write(path, lambda f: f.write(text))

    @classmethod
    def load(cls, path):
        """Read a tokenizer written by `save`; ValueError if it is not one of this class."""
        tokenizer = load_tokenizer(path)
        if not isinstance(tokenizer, cls):
            raise ValueError(f"{path} holds a {type(tokenizer).__name__}, not a {cls.__name__}")
        return tokenizer

    def _header(self, kind):
        return {"format": FILE_FORMAT, "version": FILE_VERSION, "type": kind}


class CharTokenizer(Tokenizer):
    """One token per character; the ids are the positions in the sorted characters.

    >>> tok = CharTokenizer.train("hello")       # vocabulary "ehlo"
    >>> tok.encode("hole"), tok.decode([1, 2])
    ([1, 3, 2, 0], 'hl')
    """

    def __init__(self, chars):
        self.chars = "".join(sorted(set(chars)))
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}
        self.itos = dict(enumerate(self.chars))

    @classmethod
    def train(cls, text):
        """The tokenizer whose vocabulary is every distinct character of `text`."""
        return cls(text)

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, text):
        """text -> list of ids; ValueError naming the first character not in the vocabulary."""
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError as e:
            ch = e.args[0]
            raise ValueError(f"character {ch!r} (U+{ord(ch):04X}) is not in this tokenizer's "
                             f"vocabulary of {self.vocab_size} characters") from None

    def decode(self, ids):
        """ids (any iterable of ints) -> text; ValueError for an id outside the vocabulary."""
        try:
            return "".join(map(self.itos.__getitem__, _as_int_list(ids)))
        except KeyError as e:
            raise ValueError(f"token id {e.args[0]} is outside the vocabulary "
                             f"(0..{self.vocab_size - 1})") from None

    def to_json(self):
        """The whole tokenizer as one line of JSON text."""
        return json.dumps({**self._header("char"), "chars": self.chars}) + "\n"

    @classmethod
    def _from_dict(cls, d):
        _check(isinstance(d.get("chars"), str), '"chars" must be a string')
        _check(len(set(d["chars"])) == len(d["chars"]), '"chars" repeats a character')
        _check(not any("\ud800" <= c <= "\udfff" for c in d["chars"]),
               '"chars" holds a lone surrogate, which no text can be written with')
        return cls(d["chars"])


class BPETokenizer(Tokenizer):
    """Byte-level BPE with a regex pre-split and tiktoken's rules for special tokens.

    Saved state: `pattern` (the pre-split regex), `merges` (dict pair -> new id,
    in rank order), `special_tokens` (dict str -> id) and `byte_ids` (the id of
    each byte: 0..255 in order when we train, a permutation for GPT-2).
    Derived from it: `vocab` (dict id -> bytes).
    """

    def __init__(self, pattern=GPT2_SPLIT_PATTERN, merges=None, special_tokens=None,
                 byte_ids=None):
        self._set_state(pattern, merges or {}, special_tokens or {},
                        range(N_BYTES) if byte_ids is None else byte_ids)

    def _set_state(self, pattern, merges, special_tokens, byte_ids):
        """Set the saved state and compute everything derived from it."""
        self.pattern, self.merges = pattern, dict(merges)
        self.special_tokens, self.byte_ids = dict(special_tokens), list(byte_ids)
        self._split = regex.compile(self.pattern)
        twin = ASCII_TWINS.get(self.pattern)
        self._ascii_split = re.compile(twin) if twin else None
        self._byte_table = bytes(self.byte_ids)    # bytes.translate table: byte -> its id
        self.vocab = {token: bytes([b]) for b, token in enumerate(self.byte_ids)}
        for (a, b), new_id in self.merges.items():
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        self._token_of = {}                        # bytes -> id (the lowest, if repeated)
        for token, token_bytes in self.vocab.items():
            self._token_of.setdefault(token_bytes, token)
        for text, token in self.special_tokens.items():
            self.vocab[token] = text.encode("utf-8")
        self._vocab_size = max(self.vocab) + 1
        self._cache = ChunkCache(self.merges, self._byte_table, self._token_of)   # filled by encode

    @property
    def vocab_size(self):
        return self._vocab_size

    def train(self, text, vocab_size, pattern=GPT2_SPLIT_PATTERN, special_tokens=()):
        """Learn merges from `text` until there are `vocab_size` tokens; returns self.

        vocab_size counts the 256 bytes, the merges and the special tokens, which
        take the last ids and are cut out of `text` first. Each distinct chunk is
        counted once (see bpe_train.py). Fewer merges if no pair is left to merge.
        """
        special_tokens = list(special_tokens)
        if len(set(special_tokens)) != len(special_tokens) or "" in special_tokens:
            raise ValueError(f"special tokens must be distinct non-empty strings: {special_tokens}")
        n_merges = vocab_size - N_BYTES - len(special_tokens)
        if n_merges < 0:
            raise ValueError(f"vocab_size must be at least {N_BYTES + len(special_tokens)} "
                             f"(256 bytes, {len(special_tokens)} special), got {vocab_size}")
        pieces = split_on_specials(text, special_tokens)[::2] if special_tokens else [text]
        chunk_counts = Counter(chain.from_iterable(map(regex.compile(pattern).findall, pieces)))
        merges = learn_merges(chunk_counts, n_merges)
        first_special = N_BYTES + len(merges)
        specials = {s: first_special + i for i, s in enumerate(special_tokens)}
        self._set_state(pattern, merges, specials, range(N_BYTES))
        return self

    @classmethod
    def from_gpt2(cls, encoder_json=None, vocab_bpe=None):
        """OpenAI's GPT-2 tokenizer, by default from the copies shipped in minigpt/assets/gpt2."""
        merges, byte_ids, special_tokens = read_gpt2_files(encoder_json, vocab_bpe)
        check_ids(byte_ids, len(merges), special_tokens)
        return cls(GPT2_SPLIT_PATTERN, merges, special_tokens, byte_ids)

    def encode(self, text, allowed_special=(), disallowed_special="all"):
        """text -> ids, with tiktoken's rules for special tokens such as "<|endoftext|>".

        allowed_special: "all", or a set of the special tokens to encode as their
        one id. disallowed_special: "all" (every special token not allowed) or a
        set; text containing one of them is a ValueError. disallowed_special=()
        encodes special-token text as ordinary text.
        """
        specials = set(self.special_tokens)
        allowed = specials if allowed_special == "all" else set(allowed_special)
        if not allowed <= specials:
            raise ValueError(f"{sorted(allowed - specials)} are not special tokens here")
        disallowed = specials - allowed if disallowed_special == "all" else disallowed_special
        for special in disallowed:
            if special in text:
                raise ValueError(f"text contains the special token {special!r}: pass "
                                 f"allowed_special={{{special!r}}} to encode it as one token, "
                                 f"or disallowed_special=() to encode it as ordinary text")
        if not allowed:
            return self.encode_ordinary(text)
        ids = []
        for i, piece in enumerate(split_on_specials(text, allowed)):   # text, special, text...
            ids.extend([self.special_tokens[piece]] if i % 2 else self.encode_ordinary(piece))
        return ids

    def encode_ordinary(self, text):
        """text -> ids, treating special-token text like any other text.

        One regex pass splits the whole text; each distinct chunk is encoded once
        and cached. Lone surrogates become U+FFFD first, as in tiktoken.
        """
        try:
            return self._encode_chunks(self._chunks(text))
        except UnicodeEncodeError:
            return self._encode_chunks(self._chunks(_replace_lone_surrogates(text)))

    def _chunks(self, text):
        """The pre-split: text -> its chunks. A pattern with an `re` twin (GPT-2's) splits ASCII
        text by the twin (Python strings know if they are ASCII: the check costs nothing), and
        other text by both, each where it can (bpe_gpt2.split_mostly_ascii)."""
        if self._ascii_split is None:
            return self._split.findall(text)
        if text.isascii():
            return self._ascii_split.findall(text)
        return split_mostly_ascii(text, self._ascii_split, self._split)

    def _encode_chunks(self, chunks):
        """Chunks -> all their ids in one pass: the cache encodes a chunk it has not seen."""
        if len(self._cache) > CACHE_MAX_CHUNKS:
            self._cache.clear()
        return self._cache.ids(chunks)

    def encode_and_show_work(self, text):
        """Encode ordinary text the slow, readable way and return every step, for teaching.

        Returns one dict per chunk: "chunk" (str), "bytes" (its UTF-8 bytes as
        ints), "merges" (a (pair, new_id, ids_after) for each merge, in order) and
        "ids" (its final ids, the same as encode_ordinary gives).
        """
        steps = []
        for chunk in self._split.findall(_replace_lone_surrogates(text)):
            chunk_bytes = chunk.encode("utf-8")
            ids, merges_applied = [self.byte_ids[b] for b in chunk_bytes], []
            while len(ids) >= 2:
                pair = min(zip(ids, ids[1:]), key=lambda p: self.merges.get(p, NO_MERGE))
                if pair not in self.merges:
                    break
                ids = merge(ids, pair, self.merges[pair])
                merges_applied.append((pair, self.merges[pair], ids))
            steps.append({"chunk": chunk, "bytes": list(chunk_bytes),
                          "merges": merges_applied, "ids": ids})
        return steps

    def decode(self, ids):
        """ids (any iterable of ints) -> text; an id outside the vocabulary is a ValueError.

        Bytes that are not valid UTF-8 (arbitrary ids make them) become U+FFFD.
        """
        try:
            data = b"".join(map(self.vocab.__getitem__, _as_int_list(ids)))
        except KeyError as e:
            raise ValueError(f"token id {e.args[0]} is not in the vocabulary "
                             f"(size {self.vocab_size})") from None
        return data.decode("utf-8", errors="replace")

    def to_json(self):
        """The whole tokenizer as JSON text, one merge per line so a person can read it."""
        fields = {"pattern": self.pattern, "special_tokens": self.special_tokens,
                  "byte_ids": self.byte_ids}
        lines = [json.dumps(self._header("bpe"))[:-1]]   # '{"format": ..., "type": "bpe"'
        lines += [f"{json.dumps(key)}: {json.dumps(value)}" for key, value in fields.items()]
        merges = ",\n".join(f"[{a}, {b}]" for a, b in self.merges)
        return ",\n".join(lines) + ',\n"merges": [\n' + merges + "\n]}\n"

    @classmethod
    def _from_dict(cls, d):
        pattern, specials, byte_ids, merges = map(
            d.get, ("pattern", "special_tokens", "byte_ids", "merges"))
        _check(isinstance(pattern, str), '"pattern" must be a string')
        try:
            regex.compile(pattern)
        except regex.error as e:
            raise ValueError(f"corrupt tokenizer: bad pattern ({e})") from None
        _check("".join(regex.findall(pattern, PATTERN_PROBE)) == PATTERN_PROBE,
               '"pattern" does not split text losslessly (it would drop characters)')
        _check(isinstance(merges, list), '"merges" must be a list')
        seen = {}
        for rank, pair in enumerate(merges):
            _check(isinstance(pair, list) and len(pair) == 2
                   and all(type(t) is int and 0 <= t < N_BYTES + rank for t in pair),
                   f"merge {rank} ({pair!r}) is not a pair of earlier token ids")
            _check(tuple(pair) not in seen, f"merge {rank} ({pair!r}) repeats merge {seen.get(tuple(pair))}")
            seen[tuple(pair)] = rank
        check_ids(byte_ids, len(merges), specials)
        merges = {tuple(pair): N_BYTES + rank for rank, pair in enumerate(merges)}
        return cls(pattern, merges, specials, byte_ids)


TOKENIZER_TYPES = {"char": CharTokenizer, "bpe": BPETokenizer}


def tokenizer_from_json(s):
    """Rebuild a tokenizer from `to_json()` text; ValueError for anything foreign or corrupt."""
    d = loads_versioned(s, FILE_FORMAT, FILE_VERSION, "tokenizer")
    if not isinstance(d.get("type"), str) or d["type"] not in TOKENIZER_TYPES:
        raise ValueError(f"unknown tokenizer type {d.get('type')!r} "
                         f"(expected one of {sorted(TOKENIZER_TYPES)})")
    return TOKENIZER_TYPES[d["type"]]._from_dict(d)


def load_tokenizer(path):
    """Read a tokenizer file written by `save`; ValueError if unreadable, foreign or corrupt."""
    try:
        text = read_regular_text(path, "tokenizer file")      # a FIFO is refused, not waited on
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read tokenizer file {path}: {e}") from None
    try:
        return tokenizer_from_json(text)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def build_tokenizer(kind, text, vocab_size=None):
    """The tokenizer the training CLI asks for: "char", "bpe" (trained on text) or "gpt2"."""
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        return BPETokenizer().train(text, vocab_size or 512)
    if kind == "gpt2":
        return BPETokenizer.from_gpt2()
    raise ValueError(f"unknown tokenizer kind {kind!r} (expected char, bpe or gpt2)")
