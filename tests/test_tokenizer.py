"""minigpt/tokenizer.py (with bpe_train.py, bpe_gpt2.py): round trips, training, files, GPT-2."""
import doctest
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt import bpe_encode, bpe_gpt2, bpe_train
from minigpt import tokenizer as tokmod
from minigpt.bpe_train import merge
from minigpt.tokenizer import (ENDOFTEXT, GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, BPETokenizer,
                               CharTokenizer, build_tokenizer, load_tokenizer, merge_by_rank,
                               tokenizer_from_json)

SHAKESPEARE = Path(__file__).resolve().parents[1] / "shakespeare.txt"
TRAIN_TEXT = SHAKESPEARE.read_text(encoding="utf-8")[:50_000]
# Text that exercises the pre-split: runs of mixed whitespace, contractions, digits, non-ASCII.
TRICKY_ALPHABET = list(" \n\r\t\u00a0\u3000'sdmtlvreaSZ0123.,!?é中😀\x0b\x85")
tricky_text = st.text(alphabet=st.sampled_from(TRICKY_ALPHABET), max_size=60)
any_text = st.one_of(st.text(), tricky_text)

# GPT-2 ids of tricky strings, computed once with tiktoken's "gpt2" encoding (tiktoken 0.14).
GPT2_IDS = {
    "hello world": [31373, 995],
    "Hello, World!": [15496, 11, 2159, 0],
    "": [],
    "   ": [220, 220, 220],
    "  leading spaces": [220, 3756, 9029],
    "trailing spaces   ": [9535, 4386, 9029, 220, 220, 220],
    "trailing newline\n": [9535, 4386, 649, 1370, 198],
    "\n\n\nblank lines\n\n": [628, 198, 27190, 3951, 628],
    "a\r\nb": [64, 201, 198, 65],
    "tabs\tand\xa0nbsp": [8658, 82, 197, 392, 1849, 77, 24145],
    "I'm can't we'll they've you'd he's IT'S": [40, 1101, 460, 470, 356, 1183, 484, 1053,
                                                345, 1549, 339, 338, 7283, 6, 50],
    "1234567890 3.14159 1,000,000": [10163, 2231, 30924, 3829, 513, 13, 1415, 19707, 352, 11,
                                     830, 11, 830],
    "abc123def": [39305, 10163, 4299],
    "你好，世界": [19526, 254, 25001, 121, 171, 120, 234, 10310, 244, 45911, 234],
    "emoji 😀👍🏽 and a flag 🇺🇸": [368, 31370, 30325, 222, 41840, 235, 8582, 237, 121, 290,
                                  257, 6056, 12520, 229, 118, 8582, 229, 116],
    "Ünïcödé çàfé naïve": [127, 250, 77, 26884, 66, 9101, 67, 2634, 6184, 100, 24247, 69, 2634,
                           41492],
    "привет мир": [140, 123, 21169, 18849, 38857, 16843, 20375, 12466, 120, 18849, 21169],
    "def f(x):\n    return x ** 2\n": [4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124,
                                        12429, 362, 198],
    "hi  there   you": [5303, 220, 612, 220, 220, 345],
}
GPT2_IDS_WITH_SPECIAL = ("hello <|endoftext|> world", [31373, 220, 50256, 995])


@pytest.fixture(scope="module")
def gpt2():
    return BPETokenizer.from_gpt2()


@pytest.fixture(scope="module")
def trained():
    """BPE tokenizers trained on a slice of shakespeare.txt, one per split pattern."""
    return {name: BPETokenizer().train(TRAIN_TEXT, 400, pattern=pattern)
            for name, pattern in (("gpt2-split", GPT2_SPLIT_PATTERN),
                                  ("gpt4-split", GPT4_SPLIT_PATTERN))}


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    """tiktoken's GPT-2 encoding, built offline from the shipped files (checked against
    the SHA-256 hashes tiktoken expects for OpenAI's originals)."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str
    ranks = data_gym_to_mergeable_bpe_ranks(
        str(tokmod.GPT2_ASSETS / "vocab.bpe"), str(tokmod.GPT2_ASSETS / "encoder.json"),
        vocab_bpe_hash="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
        encoder_json_hash="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783")
    return tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 50256})


def naive_train(text, n_merges, pattern):
    """minbpe's straightforward training: recount every pair of every chunk after each merge."""
    words = [list(chunk.encode("utf-8")) for chunk in regex.findall(pattern, text)]
    merges = {}
    for new_id in range(256, 256 + n_merges):
        counts = Counter(pair for w in words for pair in zip(w, w[1:]))
        if not counts:
            break
        pair = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))   # ties: the smaller pair
        merges[pair] = new_id
        words = [merge(w, pair, new_id) for w in words]
    return merges


# ----------------------------------------------------------------------------- helpers

@pytest.mark.parametrize("module", [tokmod, bpe_encode, bpe_train, bpe_gpt2])
def test_docstring_examples_are_true(module):
    assert doctest.testmod(module).failed == 0


def simple_merge_loop(ids, merges):
    """The readable loop (as in encode_and_show_work): merge the lowest-ranked pair, rescan."""
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, float("inf")))
        if pair not in merges:
            break
        ids = merge(ids, pair, merges[pair])
    return ids


def merge_on_the_heap(ids, merges):
    """merge_by_rank with its linked-list-and-heap path even for short chunks."""
    old, bpe_encode.SHORT_CHUNK = bpe_encode.SHORT_CHUNK, 0
    try:
        return bpe_encode.merge_by_rank(list(ids), merges)
    finally:
        bpe_encode.SHORT_CHUNK = old


# Runs like minified code, base64, DNA or a line of "=": a short unit repeated, then noise.
runs = st.builds(lambda unit, k, tail: unit * k + tail,
                 st.text(min_size=1, max_size=4), st.integers(1, 120), st.text(max_size=20))


def test_merge_by_rank_equals_repeated_merge_of_lowest_ranked_pair(trained):
    merges = trained["gpt2-split"].merges
    for chunk in regex.findall(GPT2_SPLIT_PATTERN, TRAIN_TEXT[:5000]):
        ids = list(chunk.encode("utf-8"))
        assert merge_by_rank(list(ids), merges) == simple_merge_loop(ids, merges)
        assert merge_on_the_heap(ids, merges) == simple_merge_loop(ids, merges)


@st.composite
def bpe_tables_and_ids(draw):
    """A random merge table (each merge joins two earlier ids) and ids over a small alphabet."""
    n_base = draw(st.integers(1, 4))
    merges = {}
    for new_id in range(n_base, n_base + draw(st.integers(0, 30))):
        merges.setdefault((draw(st.integers(0, new_id - 1)), draw(st.integers(0, new_id - 1))), new_id)
    unit = draw(st.lists(st.integers(0, n_base - 1), min_size=1, max_size=4))
    ids = unit * draw(st.integers(1, 60)) + draw(st.lists(st.integers(0, n_base - 1), max_size=80))
    return merges, ids


@settings(max_examples=300)
@given(bpe_tables_and_ids())
def test_heap_merge_equals_the_simple_loop_on_random_tables(table_and_ids):
    merges, ids = table_and_ids
    assert merge_on_the_heap(ids, merges) == simple_merge_loop(ids, merges)
    assert merge_by_rank(list(ids), merges) == simple_merge_loop(ids, merges)


@settings(max_examples=60)
@given(st.one_of(runs, any_text))
def test_heap_merge_equals_the_simple_loop_on_runs_and_unicode(gpt2, trained, text):
    for tok in (gpt2, trained["gpt4-split"]):
        for chunk in tok._split.findall(text):
            ids = list(chunk.encode("utf-8").translate(tok._byte_table))
            assert merge_on_the_heap(ids, tok.merges) == simple_merge_loop(ids, tok.merges)


@pytest.mark.parametrize("unit", ["x", "=", "ACGT", "ab1+/Q", "é中", "😀"])
def test_long_runs_without_spaces_encode_as_the_simple_loop_does(gpt2, unit):
    text = (unit * 3000)[:3000]                    # one chunk of 3000 characters (or a few)
    steps = gpt2.encode_and_show_work(text)
    assert gpt2.encode_ordinary(text) == [i for step in steps for i in step["ids"]]


# ----------------------------------------------------------------------------- char

@given(any_text)
def test_char_round_trip_on_any_text(text):
    tok = CharTokenizer.train(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == len(set(text))


def test_char_ids_are_positions_in_the_sorted_vocabulary():
    tok = CharTokenizer.train("hello world")
    chars = sorted(set("hello world"))
    assert tok.encode("world") == [chars.index(ch) for ch in "world"]


def test_char_unknown_character_is_an_error_naming_it():
    tok = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match=r"'z'.*U\+007A"):
        tok.encode("abz")


def test_char_decode_of_an_unknown_id_is_an_error():
    with pytest.raises(ValueError, match="token id 3"):
        CharTokenizer.train("abc").decode([0, 3])
    with pytest.raises(ValueError, match="token id -1"):
        CharTokenizer.train("abc").decode([-1])


# ----------------------------------------------------------------------------- BPE training

def test_wikipedia_example_aaabdaaabac_takes_three_merges():
    # Wikipedia's hand-worked BPE: aa -> Z, then ab -> Y (tied with Za; the smaller pair
    # wins), then ZY -> X, leaving "XdXac".
    a, b, c, d = map(ord, "abcd")
    Z, Y, X = 256, 257, 258
    tok = BPETokenizer().train("aaabdaaabac", 256 + 3)
    assert tok.merges == {(a, a): Z, (a, b): Y, (Z, Y): X}
    assert tok.encode("aaabdaaabac") == [X, d, X, a, c]
    assert tok.decode([X, d, X, a, c]) == "aaabdaaabac"


@settings(max_examples=60)
@given(st.text(alphabet="ab c\n'é1", max_size=200), st.integers(1, 30),
       st.sampled_from([GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN]))
def test_incremental_training_learns_the_same_merges_as_recounting_everything(text, n, pattern):
    tok = BPETokenizer().train(text, 256 + n, pattern=pattern)
    assert tok.merges == naive_train(text, n, pattern)


@settings(max_examples=40)
@given(runs, st.integers(1, 30), st.sampled_from([GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN]))
def test_training_on_text_with_long_runs_learns_what_recounting_learns(text, n, pattern):
    text = "ab ab " + text + " x" * 3
    tok = BPETokenizer().train(text, 256 + n, pattern=pattern)
    assert tok.merges == naive_train(text, n, pattern)


def test_training_on_real_text_matches_recounting_everything():
    text = TRAIN_TEXT[:5000]
    assert BPETokenizer().train(text, 256 + 40).merges == naive_train(text, 40, GPT2_SPLIT_PATTERN)


def test_training_stops_early_when_no_pair_is_left():
    tok = BPETokenizer().train("ab ab", 1000)
    assert tok.vocab_size == 258     # "ab", then " ab"; nothing else to merge
    assert tok.encode("ab ab") == [256, 257]


def test_vocab_size_below_the_256_bytes_or_empty_special_token_is_an_error():
    with pytest.raises(ValueError, match="at least 256"):
        BPETokenizer().train("hello", 100)
    with pytest.raises(ValueError, match="distinct non-empty"):
        BPETokenizer().train("hello", 300, special_tokens=["<|a|>", ""])


def test_trained_special_tokens_take_the_last_ids_and_are_never_merged():
    text = "ab<|endoftext|>ab<|endoftext|>ab"
    tok = BPETokenizer().train(text, 256 + 5 + 1, special_tokens=[ENDOFTEXT])
    assert tok.special_tokens == {ENDOFTEXT: tok.vocab_size - 1}
    assert all(b"<" not in tok.vocab[i] for i in tok.merges.values())
    ids = tok.encode(text, allowed_special="all")
    assert ids.count(tok.special_tokens[ENDOFTEXT]) == 2
    assert tok.decode(ids) == text


@pytest.mark.parametrize("name", ["gpt2-split", "gpt4-split"])
@given(text=any_text)
def test_trained_bpe_round_trip_on_any_text(trained, name, text):
    tok = trained[name]
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=40)
@given(any_text, st.integers(0, 50))
def test_bpe_trained_on_a_text_round_trips_that_text(text, n):
    tok = BPETokenizer().train(text, 256 + n)
    assert tok.decode(tok.encode(text)) == text


def test_untrained_bpe_is_plain_utf8_bytes():
    assert BPETokenizer().encode("hé") == list("hé".encode("utf-8"))


def test_trained_bpe_compresses_its_training_text(trained):
    ids = trained["gpt2-split"].encode(TRAIN_TEXT)
    assert len(ids) < 0.6 * len(TRAIN_TEXT.encode("utf-8"))


# ----------------------------------------------------------------------------- encode / decode

def test_encode_and_show_work_applies_the_merges_in_order():
    tok = BPETokenizer().train("aaabdaaabac", 256 + 3)
    (step,) = tok.encode_and_show_work("aaab")
    assert step["chunk"] == "aaab" and step["bytes"] == [97, 97, 97, 98]
    assert step["merges"] == [((97, 97), 256, [256, 97, 98]), ((97, 98), 257, [256, 257]),
                              ((256, 257), 258, [258])]
    assert step["ids"] == [258]


@given(any_text)
def test_encode_and_show_work_ends_in_the_ids_encode_gives(gpt2, trained, text):
    for tok in (gpt2, trained["gpt4-split"]):
        steps = tok.encode_and_show_work(text)
        assert [i for step in steps for i in step["ids"]] == tok.encode_ordinary(text)
        assert "".join(step["chunk"] for step in steps) == text


def test_every_trained_token_is_reached_by_its_own_merges(trained):
    # encode maps a chunk that is a whole token straight to it (as tiktoken does); this
    # shows that the shortcut never changes the answer.
    for tok in trained.values():
        for token, token_bytes in tok.vocab.items():
            assert merge_by_rank(list(token_bytes), tok.merges) == [token]


def test_every_gpt2_token_is_reached_by_its_own_merges(gpt2):
    # As above, for GPT-2. Bytes that are not UTF-8 can never be a whole chunk, so only
    # tokens that decode are checked.
    table = bytes(gpt2.byte_ids)
    for token, token_bytes in gpt2.vocab.items():
        if token in gpt2.special_tokens.values():
            continue
        try:
            token_bytes.decode("utf-8")
        except UnicodeDecodeError:
            continue
        assert merge_by_rank(list(token_bytes.translate(table)), gpt2.merges) == [token]


def test_cache_does_not_change_results(gpt2, monkeypatch):
    text = TRAIN_TEXT[:3000]
    first = gpt2.encode(text)
    monkeypatch.setattr(tokmod, "CACHE_MAX_CHUNKS", 10)   # forces the cache to be emptied
    assert gpt2.encode(text) == first
    assert gpt2.encode(text[::-1]) == BPETokenizer.from_gpt2().encode(text[::-1])


@given(st.lists(st.integers(0, 50256), max_size=30))
def test_decoding_arbitrary_ids_never_crashes(gpt2, ids):
    data = b"".join(gpt2.vocab[i] for i in ids)
    assert gpt2.decode(ids) == data.decode("utf-8", errors="replace")


def test_invalid_utf8_decodes_to_replacement_characters(gpt2):
    half_emoji = gpt2.encode("😀")[:1]
    assert gpt2.decode(half_emoji) == "\ufffd"


def test_decode_accepts_numpy_arrays(gpt2, trained):
    for tok in (gpt2, trained["gpt2-split"], CharTokenizer.train("hello world")):
        ids = tok.encode("hello world")
        assert tok.decode(np.array(ids, dtype=np.int64)) == "hello world"


def test_decode_of_an_unknown_id_is_an_error(gpt2):
    with pytest.raises(ValueError, match="token id 50257"):
        gpt2.decode([31373, 50257])


# ----------------------------------------------------------------------------- special tokens

def test_special_token_text_is_an_error_by_default(gpt2):
    with pytest.raises(ValueError, match=regex.escape(repr(ENDOFTEXT))):
        gpt2.encode("hello <|endoftext|> world")


def test_allowed_special_encodes_the_special_token_as_its_one_id(gpt2):
    text, ids = GPT2_IDS_WITH_SPECIAL
    assert gpt2.encode(text, allowed_special="all") == ids
    assert gpt2.encode(text, allowed_special={ENDOFTEXT}) == ids
    assert gpt2.decode(ids) == text


def test_disallowed_special_empty_encodes_special_text_as_ordinary_text(gpt2):
    text = "hello <|endoftext|> world"
    ids = gpt2.encode(text, disallowed_special=())
    assert ids == gpt2.encode_ordinary(text)
    assert 50256 not in ids and gpt2.decode(ids) == text


def test_allowing_an_unknown_special_token_is_an_error(gpt2):
    with pytest.raises(ValueError, match="not special tokens"):
        gpt2.encode("hi", allowed_special={"<|fim|>"})


# ----------------------------------------------------------------------------- GPT-2 exactness

def test_gpt2_hello_world():
    assert BPETokenizer.from_gpt2().encode("hello world") == [31373, 995]


@pytest.mark.parametrize("text", list(GPT2_IDS))
def test_gpt2_ids_equal_tiktokens_on_tricky_strings(gpt2, text):
    assert gpt2.encode(text) == GPT2_IDS[text]
    assert gpt2.decode(GPT2_IDS[text]) == text


def test_gpt2_vocabulary_is_openais(gpt2):
    encoder = json.loads((tokmod.GPT2_ASSETS / "encoder.json").read_text(encoding="utf-8"))
    assert gpt2.vocab_size == len(encoder) == 50257
    char_of = tokmod.bytes_to_unicode()
    assert {"".join(char_of[b] for b in gpt2.vocab[i]): i for i in gpt2.vocab} == encoder


def test_gpt2_files_load_with_or_without_the_version_line(tmp_path, gpt2):
    merges_only = (tokmod.GPT2_ASSETS / "vocab.bpe").read_text(encoding="utf-8").split("\n", 1)[1]
    (tmp_path / "merges.txt").write_text(merges_only, encoding="utf-8")
    loaded = BPETokenizer.from_gpt2(vocab_bpe=tmp_path / "merges.txt")
    assert loaded.merges == gpt2.merges and loaded.byte_ids == gpt2.byte_ids


def test_files_that_are_not_gpt2s_are_a_clear_error(tmp_path):
    (tmp_path / "encoder.json").write_text('{"a": 0}', encoding="utf-8")
    with pytest.raises(ValueError, match="not GPT-2 tokenizer files"):
        BPETokenizer.from_gpt2(encoder_json=tmp_path / "encoder.json")
    with pytest.raises(ValueError, match="not GPT-2 tokenizer files"):
        BPETokenizer.from_gpt2(vocab_bpe=tokmod.GPT2_ASSETS / "encoder.json")


@settings(max_examples=300)
@given(any_text)
def test_gpt2_ids_equal_tiktokens_on_any_text(gpt2, tiktoken_gpt2, text):
    assert gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
    with_special = text + ENDOFTEXT + text
    assert (gpt2.encode(with_special, allowed_special="all")
            == tiktoken_gpt2.encode(with_special, allowed_special="all"))


def test_gpt2_ids_equal_tiktokens_on_shakespeare_and_lone_surrogates(gpt2, tiktoken_gpt2):
    assert gpt2.encode(TRAIN_TEXT) == tiktoken_gpt2.encode(TRAIN_TEXT)
    assert gpt2.encode("a\ud800b \udfff") == tiktoken_gpt2.encode("a\ud800b \udfff")


@given(any_text)
def test_gpt2_round_trip_on_any_text(gpt2, text):
    assert gpt2.decode(gpt2.encode(text, disallowed_special=())) == text


# ----------------------------------------------------------------------------- files

def _every_kind(gpt2, trained):
    special = BPETokenizer().train(TRAIN_TEXT[:5000], 300, special_tokens=[ENDOFTEXT])
    return [CharTokenizer.train(TRAIN_TEXT), trained["gpt4-split"], special, gpt2]


def test_save_load_round_trip_for_every_kind(tmp_path, gpt2, trained):
    sample = TRAIN_TEXT[-2000:]
    for i, tok in enumerate(_every_kind(gpt2, trained)):
        path = tmp_path / f"tok{i}.json"
        tok.save(path)
        for loaded in (type(tok).load(path), load_tokenizer(path),
                       tokenizer_from_json(tok.to_json())):
            assert type(loaded) is type(tok)
            assert loaded.to_json() == tok.to_json()
            assert loaded.vocab_size == tok.vocab_size
            assert loaded.encode(sample) == tok.encode(sample)


def test_saved_file_is_readable_text_with_one_merge_per_line(tmp_path):
    tok = BPETokenizer().train("aaabdaaabac", 256 + 3)
    tok.save(tmp_path / "tok.json")
    lines = (tmp_path / "tok.json").read_text(encoding="utf-8").splitlines()
    assert '"version": 1' in lines[0] and '"type": "bpe"' in lines[0]
    assert any(line.startswith('"pattern": ') for line in lines)
    assert lines[-4:] == ["[97, 97],", "[97, 98],", "[256, 257]", "]}"]


def test_loading_with_the_wrong_class_is_an_error(tmp_path):
    CharTokenizer.train("abc").save(tmp_path / "char.json")
    with pytest.raises(ValueError, match="not a BPETokenizer"):
        BPETokenizer.load(tmp_path / "char.json")


def _bpe_dict(**changes):
    d = json.loads(BPETokenizer().train("aaabdaaabac", 256 + 3).to_json())
    d.update(changes)
    return json.dumps(d)


CORRUPT = {
    "empty": ("", "invalid JSON"),
    "not json": ("merges: 97 97", "invalid JSON"),
    "a list": ("[1, 2]", "not a minigpt tokenizer"),
    "foreign json": ('{"model": {"type": "BPE"}}', "not a minigpt tokenizer"),
    "future version": (_bpe_dict(version=2), "version 2"),
    "unknown type": (_bpe_dict(type="wordpiece"), "unknown tokenizer type"),
    "merge of a later id": (_bpe_dict(merges=[[97, 97], [300, 97]]), "merge 1"),
    "merge not a pair": (_bpe_dict(merges=[[97, 97, 97]]), "merge 0"),
    "byte ids": (_bpe_dict(byte_ids=[0] * 256), "byte_ids"),
    "bad pattern": (_bpe_dict(pattern="(unclosed"), "bad pattern"),
    "special id clash": (_bpe_dict(special_tokens={"<|a|>": 97}), "special_tokens"),
    "char not string": ('{"format": "minigpt-tokenizer", "version": 1, "type": "char", '
                        '"chars": 5}', "chars"),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_corrupt_or_foreign_text_is_a_clear_value_error(name):
    text, message = CORRUPT[name]
    with pytest.raises(ValueError, match=regex.escape(message)):
        tokenizer_from_json(text)


def test_corrupt_files_are_clear_value_errors(tmp_path, gpt2):
    truncated, binary = tmp_path / "truncated.json", tmp_path / "binary.json"
    truncated.write_text(gpt2.to_json()[:100_000], encoding="utf-8")
    binary.write_bytes(b"\x80\x81PK\x03\x04")
    for path, message in ((truncated, "invalid JSON"), (binary, "cannot read"),
                          (tmp_path / "missing.json", "cannot read")):
        with pytest.raises(ValueError, match=message):
            load_tokenizer(path)


# ----------------------------------------------------------------------------- CLI entry point

def test_build_tokenizer_makes_each_kind():
    assert isinstance(build_tokenizer("char", "hello"), CharTokenizer)
    assert build_tokenizer("bpe", TRAIN_TEXT[:20_000], 300).vocab_size == 300
    assert build_tokenizer("gpt2", "ignored").vocab_size == 50257
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        build_tokenizer("word", "hello")


# ------------------------------------------------------------ files that leave holes in the ids

def _bpe_dict(merges, specials=None):
    tok = BPETokenizer().train("hello hello world " * 20, 260)
    d = json.loads(tok.to_json())
    d["merges"], d["special_tokens"] = merges, specials or {}
    return d


def test_a_repeated_merge_is_refused_at_load():
    with pytest.raises(ValueError, match="merge 1 .* repeats merge 0"):
        tokenizer_from_json(json.dumps(_bpe_dict([[104, 101], [104, 101], [256, 108]])))


def test_special_token_ids_that_leave_a_hole_are_refused_at_load():
    with pytest.raises(ValueError, match="special_tokens"):
        tokenizer_from_json(json.dumps(_bpe_dict([[104, 101]], {"<|x|>": 300})))
    ok = tokenizer_from_json(json.dumps(_bpe_dict([[104, 101]], {"<|x|>": 257})))
    assert ok.vocab_size == 258 and ok.decode(range(258))


def test_deeply_nested_tokenizer_json_is_a_clear_error():
    with pytest.raises(ValueError, match="nested more than"):
        tokenizer_from_json("[" * 200_000 + "]" * 200_000)


def test_deeply_nested_gpt2_vocab_json_is_a_clear_error(tmp_path):
    (tmp_path / "vocab.json").write_text("[" * 200_000)
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="nested more than"):
        BPETokenizer.from_gpt2(tmp_path / "vocab.json", tmp_path / "merges.txt")


@pytest.mark.parametrize("field, value", [("type", []), ("type", {}), ("byte_ids", [None] * 256),
                                          ("byte_ids", list(range(255)) + ["x"])])
def test_a_tokenizer_field_of_the_wrong_type_is_a_value_error(field, value):
    d = _bpe_dict([[104, 101]])
    d[field] = value
    with pytest.raises(ValueError):
        tokenizer_from_json(json.dumps(d))


def test_a_char_tokenizer_with_a_lone_surrogate_is_refused_at_load():
    d = json.loads(CharTokenizer.train("ab").to_json())
    d["chars"] = "ab\ud800"
    with pytest.raises(ValueError, match="lone surrogate"):
        tokenizer_from_json(json.dumps(d))


@pytest.mark.parametrize("pattern", [r"[a-z]+", r"\w+| ", r"."])     # drop digits, punctuation, "\n"
def test_a_bpe_pattern_that_drops_characters_is_refused_at_load(pattern):
    d = _bpe_dict([[104, 101]])
    d["pattern"] = pattern
    with pytest.raises(ValueError, match="does not split text losslessly"):
        tokenizer_from_json(json.dumps(d))
