"""Reading OpenAI's GPT-2 tokenizer files (encoder.json and vocab.bpe).

GPT-2 writes every token as text: each byte becomes one printable character
(`bytes_to_unicode`), so the space byte is written "Ġ" and " hello" is
"Ġhello". encoder.json maps each token so written to its id; vocab.bpe lists
the 50,000 merges in rank order ("Ġ t" on a line merges " " and "t"), and merge
r makes id 256 + r. Ids 0..255 are the single bytes, but in the order of the
printable characters, not byte order: `byte_ids[b]` is the id of byte b.

Also a faster way to run GPT-2's pre-split on text that is mostly ASCII.
"""
import re
from pathlib import Path

import regex

from .bpe_train import N_BYTES
from .fileio import loads_json, read_regular_text

ENDOFTEXT = "<|endoftext|>"
GPT2_ASSETS = Path(__file__).parent / "assets" / "gpt2"

# GPT-2's pre-split (tokenizer.GPT2_SPLIT_PATTERN) of text that is all ASCII, written for the
# standard library's `re`, which runs it in half the time but knows no \p{...}. Among ASCII
# characters \p{L} is [A-Za-z], \p{N} is [0-9] and \s is ASCII_SPACE (re's own \s would also
# take \x1c-\x1f), so on ASCII text the two find the same chunks.
ASCII_SPACE = "\t\n\x0b\x0c\r "
GPT2_ASCII_SPLIT_PATTERN = (rf"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^{ASCII_SPACE}A-Za-z0-9]+"""
                            rf"""|[{ASCII_SPACE}]+(?![^{ASCII_SPACE}])|[{ASCII_SPACE}]+""")
# Where GPT-2's pre-split can cut text in two without changing a chunk: after a visible ASCII
# character that an ASCII space follows. No chunk holds a non-space and then a space, and the
# pattern never looks behind, nor ahead but after a space, so each side splits as it did in the
# whole. CUT_BEFORE finds the last such cut before a point ("(?r)": search backwards).
CUT_AFTER = regex.compile(rf"[!-~](?=[{ASCII_SPACE}])")
CUT_BEFORE = regex.compile(rf"(?r)[!-~](?=[{ASCII_SPACE}])")
NON_ASCII = re.compile(r"[^\x00-\x7f]")


def split_mostly_ascii(text, ascii_split, split, min_ascii=256):
    """GPT-2's chunks of text: its ASCII stretches by `ascii_split` (the compiled `re` twin),
    the rest by `split` (the compiled GPT-2 pattern), cut where no chunk changes.

    ASCII stretches shorter than about min_ascii characters go with the non-ASCII text
    around them: for them the twin would save less than the cutting costs.
    """
    chunks, done = [], 0
    while (first := NON_ASCII.search(text, done)) is not None:
        before = CUT_BEFORE.search(text, done, first.start())
        start = before.end() if before else done
        end = first.end()
        while not text[end:end + min_ascii].isascii():    # more non-ASCII soon: take it too
            end += min_ascii
        after = CUT_AFTER.search(text, end)
        end = after.end() if after else len(text)
        chunks += ascii_split.findall(text[done:start])    # a slice of ASCII is an ASCII string,
        chunks += split.findall(text[start:end])           # whose chunks Python makes faster
        done = end
    chunks += ascii_split.findall(text[done:])
    return chunks


def bytes_to_unicode():
    """GPT-2's table byte -> printable character, used to write bytes in its files.

    Printable Latin-1 bytes stand for themselves; the others (space, control
    bytes, ...) are shifted to chr(256), chr(257), ... in byte order.
    Returns a dict int -> str.
    >>> table = bytes_to_unicode()
    >>> table[ord("a")], table[ord(" ")], table[ord("\\n")]
    ('a', 'Ġ', 'Ċ')
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for b in range(N_BYTES):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(N_BYTES + shifted)
            shifted += 1
    return table


def read_gpt2_files(encoder_json=None, vocab_bpe=None):
    """Read GPT-2's two files (default: the copies shipped in minigpt/assets/gpt2).

    Returns (merges, byte_ids, special_tokens): dict (id, id) -> new id in rank
    order, list of 256 ids, and {"<|endoftext|>": 50256}. ValueError if the
    files are not GPT-2 tokenizer files.
    """
    encoder_json = Path(encoder_json or GPT2_ASSETS / "encoder.json")
    vocab_bpe = Path(vocab_bpe or GPT2_ASSETS / "vocab.bpe")
    try:
        encoder = loads_json(read_regular_text(encoder_json, "GPT-2 vocabulary"))
        lines = [line.rstrip("\r") for line in read_regular_text(vocab_bpe, "GPT-2 merges file").split("\n")]
        merge_lines = [line for line in lines if line and not line.startswith("#version")]
        merges = {}
        for rank, line in enumerate(merge_lines):
            a, b = line.split(" ")
            if encoder[a + b] != N_BYTES + rank:
                raise ValueError(f"merge {line!r} makes id {encoder[a + b]}, "
                                 f"not {N_BYTES + rank}")
            merges[(encoder[a], encoder[b])] = encoder[a + b]
        char_of = bytes_to_unicode()
        byte_ids = [encoder[char_of[b]] for b in range(N_BYTES)]
        special_tokens = {ENDOFTEXT: encoder[ENDOFTEXT]}
        known = set(byte_ids) | set(merges.values()) | set(special_tokens.values())
        extra = next(((k, v) for k, v in encoder.items() if v not in known), None)
        if extra is not None:                  # an id no byte, merge or <|endoftext|> makes
            raise ValueError(f"{len(encoder)} entries, but the bytes, the {len(merges)} merges and "
                             f"{ENDOFTEXT} make {len(known)} tokens ({extra[0]!r:.40} is "
                             f"{extra[1]!r:.20}, which nothing makes)")
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{encoder_json} and {vocab_bpe} are not GPT-2 tokenizer files "
                         f"({type(e).__name__}: {e})") from None
    return merges, byte_ids, special_tokens
