"""Data: safe reading, encoding, the split, batches and the token cache."""
import re

import numpy as np
import pytest

from minigpt import data
from minigpt.data import DataError
from minigpt.tokenizer import build_tokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 20


def test_read_text_returns_the_text_without_a_byte_order_mark(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "héllo\n".encode())
    assert data.read_text(path) == "héllo\n"


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_bytes(b"\xef\xbb\xbf"), "is empty"),
])
def test_read_text_refuses_unusable_paths(tmp_path, make, message):
    path = tmp_path / "input.txt"
    make(path)
    with pytest.raises(DataError, match=message):
        data.read_text(path)


def test_read_text_names_the_offset_of_the_first_invalid_byte(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("abc caf".encode() + b"\xe9 au lait")
    with pytest.raises(DataError, match=r"not UTF-8 text: byte 0xe9 at offset 7"):
        data.read_text(path)


def test_token_dtype_is_uint16_exactly_when_ids_fit():
    assert data.token_dtype(65) == np.uint16
    assert data.token_dtype(1 << 16) == np.uint16
    assert data.token_dtype((1 << 16) + 1) == np.uint32


def test_encode_gives_compact_ids_that_decode_back():
    tok = build_tokenizer("char", TEXT)
    ids = data.encode(TEXT, tok)
    assert ids.dtype == np.uint16 and ids.ndim == 1
    assert tok.decode(ids.tolist()) == TEXT


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_chunked_encoding_equals_encoding_the_whole_text(kind):
    text = TEXT + "  spaces  \n\n\n  and\tmore\nx\ny \n z\n" * 5
    tok = build_tokenizer(kind, text, vocab_size=300 if kind == "bpe" else None)
    whole = np.asarray(tok.encode(text))
    for chunk_chars in (7, 50, 333):
        np.testing.assert_array_equal(data.encode(text, tok, chunk_chars=chunk_chars), whole)


def test_encode_reports_text_the_tokenizer_cannot_encode():
    tok = build_tokenizer("char", "abc")
    with pytest.raises(DataError, match="cannot encode"):
        data.encode("abz", tok)


def test_split_is_first_90_percent_then_last_10_percent():
    tokens = np.arange(1000, dtype=np.uint16)
    train, val = data.split(tokens)
    assert len(train) == 900 and len(val) == 100
    np.testing.assert_array_equal(np.concatenate([train, val]), tokens)


def test_check_length_names_both_numbers_and_the_minimum_is_exact():
    with pytest.raises(DataError, match=r"too short for block size 64: it has 300 tokens") as e:
        data.check_length(np.zeros(300, np.uint16), 64, "tiny.txt")
    need = int(re.search(r"needs at least (\d+)", str(e.value)).group(1))
    data.check_length(np.zeros(need, np.uint16), 64, "ok.txt")   # exactly enough: no error
    train, val = data.split(np.zeros(need - 1))
    assert min(len(train), len(val)) <= 64                       # one fewer really is too few


def test_get_batch_targets_are_inputs_shifted_by_one_from_contiguous_windows():
    tokens = np.arange(5000, dtype=np.uint16)
    x, y = data.get_batch(tokens, 16, 32, np.random.default_rng(0))
    assert x.shape == y.shape == (16, 32) and x.dtype == np.int64
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    np.testing.assert_array_equal(x, x[:, :1] + np.arange(32))   # consecutive tokens
    np.testing.assert_array_equal(y[:, -1], x[:, -1] + 1)


def test_get_batch_is_reproducible_and_reaches_the_last_token():
    tokens = np.arange(40, dtype=np.uint16)
    a = data.get_batch(tokens, 500, 8, np.random.default_rng(3))
    b = data.get_batch(tokens, 500, 8, np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].max() == 39 and a[0].min() == 0


def _counting_char_factory(calls):
    def make(text):
        calls.append(len(text))
        return build_tokenizer("char", text)
    return make


def test_second_load_reuses_the_cached_tokens_and_tokenizer(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    calls = []
    tokens, tok, cached, _ = data.load_corpus(path, tmp_path / "out", _counting_char_factory(calls), {"kind": "char"})
    again, tok2, cached2, _ = data.load_corpus(path, tmp_path / "out", _counting_char_factory(calls), {"kind": "char"})
    assert (cached, cached2) == (False, True) and len(calls) == 1
    assert isinstance(again, np.memmap)
    np.testing.assert_array_equal(again, tokens)
    assert tok2.encode("Speak") == tok.encode("Speak")


def test_cache_is_rebuilt_when_the_text_or_the_key_changes(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    calls, out = [], tmp_path / "out"
    data.load_corpus(path, out, _counting_char_factory(calls), {"kind": "char"})
    data.load_corpus(path, out, _counting_char_factory(calls), {"kind": "other"})
    path.write_text(TEXT + "Zounds!\n")
    tokens, tok, cached, _ = data.load_corpus(path, out, _counting_char_factory(calls), {"kind": "other"})
    assert not cached and len(calls) == 3
    assert tok.decode(tokens[-8:].tolist()) == "Zounds!\n"


def test_damaged_cache_is_rebuilt_not_trusted(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    calls, out = [], tmp_path / "out"
    tokens, _, _, _ = data.load_corpus(path, out, _counting_char_factory(calls), {"kind": "char"})
    (out / "tokens.bin").write_bytes(b"\x00\x01\x02")        # truncated
    again, _, cached, _ = data.load_corpus(path, out, _counting_char_factory(calls), {"kind": "char"})
    assert not cached
    np.testing.assert_array_equal(again, tokens)


def test_load_corpus_refuses_a_missing_file_clearly(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        data.load_corpus(tmp_path / "nope.txt", tmp_path, _counting_char_factory([]), {"kind": "char"})


def test_cache_made_with_a_given_tokenizer_is_reused_only_for_that_tokenizer(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    out = tmp_path / "out"
    tok = build_tokenizer("char", TEXT)
    tokens, _, first, _ = data.load_corpus(path, out, tokenizer=tok)
    _, _, second, _ = data.load_corpus(path, out, tokenizer=tok)
    wider = build_tokenizer("char", TEXT + "Z")
    other, tok3, third, _ = data.load_corpus(path, out, tokenizer=wider)
    assert (first, second, third) == (False, True, False)
    assert tok3.decode(other.tolist()) == TEXT   # ids of the wider tokenizer, not the cached ones


# ------------------------------------------------------------ a cache is trusted by its digest

@pytest.mark.parametrize("fill", [b"\x00", b"\xff", "other"])
def test_a_same_size_tokens_bin_with_other_content_is_rebuilt(tmp_path, fill):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    out = tmp_path / "out"
    tokens, tok, _, _ = data.load_corpus(path, out, _counting_char_factory([]), {"kind": "char"})
    size = (out / "tokens.bin").stat().st_size
    other = np.roll(np.asarray(tokens), 7).tobytes() if fill == "other" else fill * size
    (out / "tokens.bin").write_bytes(other)
    again, _, cached, _ = data.load_corpus(path, out, _counting_char_factory([]), {"kind": "char"})
    assert not cached
    np.testing.assert_array_equal(again, tokens)


def test_a_cache_with_ids_beyond_the_vocabulary_is_rebuilt_even_with_a_matching_digest(tmp_path):
    import hashlib
    import json as _json
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    out = tmp_path / "out"
    tokens, tok, _, _ = data.load_corpus(path, out, _counting_char_factory([]), {"kind": "char"})
    bad = np.full(len(tokens), 0xFFFF, dtype=np.uint16).tobytes()
    (out / "tokens.bin").write_bytes(bad)
    meta = _json.loads((out / "tokens.json").read_text())
    meta["tokens_sha256"] = hashlib.sha256(bad).hexdigest()
    (out / "tokens.json").write_text(_json.dumps(meta))
    again, _, cached, _ = data.load_corpus(path, out, _counting_char_factory([]), {"kind": "char"})
    assert not cached
    np.testing.assert_array_equal(again, tokens)


def test_a_text_from_a_pipe_is_read_once(tmp_path, pipe_path):
    tokens, tok, _, _ = data.load_corpus(pipe_path(TEXT.encode()), tmp_path / "out",
                                         _counting_char_factory([]), {"kind": "char"})
    assert tok.decode(np.asarray(tokens).tolist()) == TEXT


def test_deeply_nested_tokens_json_is_a_rebuilt_cache_not_a_recursion_error(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    out = tmp_path / "out"
    data.load_corpus(path, out, _counting_char_factory([]), {"kind": "char"})
    (out / "tokens.json").write_text("[" * 200_000)
    _, _, cached, _ = data.load_corpus(path, out, _counting_char_factory([]), {"kind": "char"})
    assert not cached
