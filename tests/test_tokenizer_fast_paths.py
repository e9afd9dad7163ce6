"""The shortcuts of BPE encoding (tokenizer.py, bpe_encode.py, bpe_gpt2.py) give the slow way's ids.

The `re` twin of GPT-2's pre-split for ASCII text (and for the ASCII stretches of other
text), and the chunk cache that encodes a chunk the first time it is looked up (whole
tokens at once, the rest by merging).
"""
import re
from itertools import product

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt import bpe_encode
from minigpt.bpe_encode import ChunkCache
from minigpt.bpe_gpt2 import split_mostly_ascii
from minigpt.tokenizer import (ASCII_SPACE, GPT2_ASCII_SPLIT_PATTERN, GPT2_SPLIT_PATTERN,
                               GPT4_SPLIT_PATTERN, BPETokenizer)
from test_tokenizer import TRAIN_TEXT, gpt2, tiktoken_gpt2  # noqa: F401 (gpt2, tiktoken_gpt2: fixtures)

ASCII = "".join(map(chr, range(128)))
# The characters where the classes differ or the pattern's alternatives meet: \s (and the
# \x1c-\x1f that re's \s takes but \p{White_Space} does not), letters, digits, apostrophes.
ASCII_EDGES = ASCII_SPACE + "\x1c\x1d\x1e\x1f" + "'sdmtlvreAZaz09_.!~\x00\x7f"
ascii_text = st.one_of(st.text(alphabet=st.sampled_from(ASCII), max_size=80),
                       st.text(alphabet=st.sampled_from(ASCII_EDGES), max_size=80))


def twin_split(text):
    return re.findall(GPT2_ASCII_SPLIT_PATTERN, text)


def gpt2_split(text):
    return regex.findall(GPT2_SPLIT_PATTERN, text)


def test_the_ascii_twin_splits_every_short_ascii_string_as_gpt2s_pattern_does():
    strings = ["".join(p) for n in (1, 2) for p in product(ASCII, repeat=n)]
    strings += ["".join(p) for p in product(ASCII_EDGES, repeat=3)]
    assert [twin_split(s) for s in strings] == [gpt2_split(s) for s in strings]


@settings(max_examples=300)
@given(ascii_text)
def test_the_ascii_twin_splits_any_ascii_text_as_gpt2s_pattern_does(text):
    assert twin_split(text) == gpt2_split(text)


@settings(max_examples=100)
@given(ascii_text)
def test_ascii_text_encodes_as_tiktoken_and_the_slow_loop_do(gpt2, tiktoken_gpt2, text):
    fresh = BPETokenizer(gpt2.pattern, gpt2.merges, gpt2.special_tokens, gpt2.byte_ids)
    slow = [i for step in gpt2.encode_and_show_work(text) for i in step["ids"]]
    assert fresh.encode_ordinary(text) == slow == tiktoken_gpt2.encode_ordinary(text)


class SplitSpy:
    """Stands in for a compiled pattern and notes how many characters it was given to split."""

    def __init__(self, pattern):
        self.compiled, self.chars = re.compile(pattern), 0

    def findall(self, text):
        self.chars += len(text)
        return self.compiled.findall(text)


# Mostly ASCII: the ASCII edge characters, now and then one beyond ASCII (its spaces included).
BEYOND_ASCII = list("\u00a0\u3000\x85\u2028\u00e9\u00c9\u00b2\u00aa\u4e2d\U0001F600\u2019")
mostly_ascii = st.lists(st.one_of(st.text(alphabet=st.sampled_from(ASCII_EDGES), max_size=12),
                                  st.sampled_from(BEYOND_ASCII)), max_size=40).map("".join)


@settings(max_examples=300)
@given(mostly_ascii, st.integers(1, 12))
def test_mostly_ascii_text_splits_as_gpt2s_pattern_does(text, min_ascii):
    twin, pattern = re.compile(GPT2_ASCII_SPLIT_PATTERN), regex.compile(GPT2_SPLIT_PATTERN)
    assert split_mostly_ascii(text, twin, pattern, min_ascii) == gpt2_split(text)


@settings(max_examples=30)
@given(st.lists(st.tuples(st.integers(0, len(TRAIN_TEXT)), st.sampled_from(BEYOND_ASCII)), max_size=8))
def test_shakespeare_with_a_few_characters_beyond_ascii_encodes_as_tiktoken(gpt2, tiktoken_gpt2, where):
    text = TRAIN_TEXT[:20_000]
    for at, char in sorted(where, reverse=True):
        text = text[:at] + char + text[at:]
    fresh = BPETokenizer(gpt2.pattern, gpt2.merges, gpt2.special_tokens, gpt2.byte_ids)
    assert fresh._chunks(text) == gpt2_split(text)
    assert fresh.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)


def test_encode_splits_by_the_twin_all_ascii_text_and_most_of_mostly_ascii_text(gpt2, monkeypatch):
    spy = SplitSpy(GPT2_ASCII_SPLIT_PATTERN)
    monkeypatch.setattr(gpt2, "_ascii_split", spy)
    text = TRAIN_TEXT[:20_000]
    assert gpt2._chunks(text) == gpt2_split(text) and spy.chars == len(text)
    spy.chars = 0
    text = text[:10_000] + "caf\u00e9" + text[10_000:]
    assert gpt2._chunks(text) == gpt2_split(text) and 0.95 * len(text) < spy.chars < len(text)
    spy.chars = 0
    assert gpt2._chunks("\u4e2d" * 1000) == gpt2_split("\u4e2d" * 1000) and spy.chars == 0
    assert BPETokenizer()._ascii_split is not None                  # trained, GPT-2's split
    assert BPETokenizer(GPT4_SPLIT_PATTERN)._ascii_split is None    # no twin: the pattern only


def test_the_chunk_cache_gives_each_chunk_the_ids_of_the_slow_loop(gpt2):
    cache = ChunkCache(gpt2.merges, gpt2._byte_table, gpt2._token_of)
    steps = gpt2.encode_and_show_work(TRAIN_TEXT + " caf\u00e9 \u4e2d\U0001F600")
    assert any(len(step["ids"]) == 1 for step in steps) and any(len(step["ids"]) > 2 for step in steps)
    for step in steps:                                  # new chunks, and then the same ones again
        assert cache.ids([step["chunk"]]) == step["ids"], step["chunk"]
    assert cache.ids([step["chunk"] for step in steps]) == [i for step in steps for i in step["ids"]]
    assert cache.ids([]) == []


def test_a_fresh_tokenizer_merges_each_distinct_chunk_once(gpt2, monkeypatch):
    merged = []
    merge_by_rank = bpe_encode.merge_by_rank
    monkeypatch.setattr(bpe_encode, "merge_by_rank",
                        lambda ids, merges: merged.append(bytes(ids)) or merge_by_rank(ids, merges))
    fresh = BPETokenizer(gpt2.pattern, gpt2.merges, gpt2.special_tokens, gpt2.byte_ids)
    chunks = gpt2_split(TRAIN_TEXT)
    first = fresh.encode(TRAIN_TEXT)
    not_tokens = {c for c in set(chunks) if c.encode("utf-8") not in gpt2._token_of}
    assert len(merged) == len(set(merged)) == len(not_tokens) > 0   # whole tokens never merge
    assert set(fresh._cache) == set(chunks)
    assert fresh.encode(TRAIN_TEXT) == first and len(merged) == len(not_tokens)   # all cached now
