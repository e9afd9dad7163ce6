"""Reading OpenAI's GPT-2 tokenizer files (encoder.json and vocab.bpe).

GPT-2 writes every token as text: each byte becomes one printable character
(`bytes_to_unicode`), so the space byte is written "Ġ" and " hello" is
"Ġhello". encoder.json maps each token so written to its id; vocab.bpe lists
the 50,000 merges in rank order ("Ġ t" on a line merges " " and "t"), and merge
r makes id 256 + r. Ids 0..255 are the single bytes, but in the order of the
printable characters, not byte order: `byte_ids[b]` is the id of byte b.
"""
from pathlib import Path

from .bpe_train import N_BYTES
from .fileio import loads_json, read_regular_text

ENDOFTEXT = "<|endoftext|>"
GPT2_ASSETS = Path(__file__).parent / "assets" / "gpt2"


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
