"""Tokenizer speed: BPE training time, and GPT-2 encoding throughput side by side with tiktoken.

    python benchmarks/bench_tokenizer.py                     # shakespeare.txt, 5 repeats
    python benchmarks/bench_tokenizer.py --repeats 9 --text some.txt
    python benchmarks/bench_tokenizer.py --run-lengths 10000 100000   # shorter scaling rows
    python benchmarks/bench_tokenizer.py --text notebooks/data/tang300.txt --run-lengths  # Chinese

Every figure is the median of --repeats runs. Each GPT-2 encode starts from a fresh
tokenizer (empty chunk cache), and minigpt and tiktoken take turns in the same loop,
so a busy machine slows both alike. tiktoken is optional: without it only minigpt's
figures are printed. Its GPT-2 encoding is built offline from minigpt's shipped copies
of OpenAI's files (which are the ones tiktoken downloads).

The scaling rows time one chunk with no spaces, "x" * n and a random DNA string
of n characters, encoded by a fresh tokenizer at each --run-lengths n (median
of --run-repeats), and BPE training on the first 100,000 characters of the text
followed by such a run; "growth" is the time's factor for each 10x in n.
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minigpt.tokenizer import ENDOFTEXT, GPT2_ASSETS, BPETokenizer  # noqa: E402


def seconds(fn):
    """Wall-clock seconds of one call of fn()."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def tiktoken_gpt2():
    """tiktoken's GPT-2 encoding from the shipped files, or None if tiktoken is not installed."""
    try:
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks
        from tiktoken_ext.openai_public import r50k_pat_str
    except ImportError:
        return None
    ranks = data_gym_to_mergeable_bpe_ranks(str(GPT2_ASSETS / "vocab.bpe"),
                                            str(GPT2_ASSETS / "encoder.json"))
    return tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 50256})


def dna(n, seed=0):
    """n random letters of ACGT: a chunk whose merges are many and small."""
    import random
    rng = random.Random(seed)
    return "".join(rng.choice("ACGT") for _ in range(n))


def scaling_rows(gpt2, reference, text, lengths, repeats, vocab_size):
    """Rows (what, time, ratio) for one long chunk at each length: encode, and training beside text."""
    rows, last = [], {}
    for n in lengths:
        for name, run in (('"x" * n', "x" * n), ("DNA", dna(n))):
            cases = [("GPT-2 encode, minigpt", lambda tok: tok.encode(run))]
            if reference is not None:
                cases.append(("GPT-2 encode, tiktoken", lambda _: reference.encode(run)))
            cases.append((f"BPE training, vocab {vocab_size}, 100K chars of text +",
                          lambda _: BPETokenizer().train(text[:100_000] + " " + run, vocab_size)))
            times = {what: [] for what, _ in cases}
            for _ in range(repeats):                   # take turns, so load slows all alike
                for what, fn in cases:
                    tok = BPETokenizer(gpt2.pattern, gpt2.merges, gpt2.special_tokens, gpt2.byte_ids)
                    times[what].append(seconds(lambda: fn(tok)))   # a fresh tokenizer: empty cache
            for what, _ in cases:
                t = statistics.median(times[what])
                key = (what, name)
                growth = f"growth {t / last[key]:.1f}x per 10x" if key in last else ""
                if what.endswith("minigpt") and reference is not None:
                    ratio = statistics.median(times["GPT-2 encode, tiktoken"]) / t
                    growth = (growth + "; " if growth else "") + f"{ratio:.2f}x tiktoken"
                last[key] = t
                rows.append((f"{what} {name}, n = {n:,}", f"{t:.3f} s", growth))
    return rows


def encode_rows(gpt2, reference, text, repeats):
    """Rows (what, MB/s, ratio) for GPT-2 encoding of text: cold, warm, tiktoken; then, for an
    ASCII text, cold and tiktoken on the text and one non-ASCII character at its end (the
    pre-split then takes its ASCII shortcut only up to a cut before that character)."""
    beyond = text + " \u00e9" if text.isascii() else None
    if reference is not None:
        for t in (text, beyond or ""):
            assert gpt2.encode(t) == reference.encode(t), "minigpt and tiktoken disagree"
    times = {"cold": [], "warm": [], "tiktoken": [], "cold beyond": [], "tiktoken beyond": []}
    for _ in range(repeats):
        fresh = BPETokenizer(gpt2.pattern, gpt2.merges, gpt2.special_tokens, gpt2.byte_ids)
        times["cold"].append(seconds(lambda: fresh.encode(text)))
        times["warm"].append(seconds(lambda: fresh.encode(text)))          # every chunk now cached
        if reference is not None:
            times["tiktoken"].append(seconds(lambda: reference.encode(text)))
        if beyond is not None:
            fresh = BPETokenizer(gpt2.pattern, gpt2.merges, gpt2.special_tokens, gpt2.byte_ids)
            times["cold beyond"].append(seconds(lambda: fresh.encode(beyond)))
            if reference is not None:
                times["tiktoken beyond"].append(seconds(lambda: reference.encode(beyond)))
    megabytes = len(text.encode("utf-8")) / 1e6
    speed = {key: megabytes / statistics.median(runs) for key, runs in times.items() if runs}

    def row(what, key, tiktoken_key):
        ratio = f"{speed[key] / speed[tiktoken_key]:.2f}x tiktoken" if tiktoken_key in speed else ""
        return (what, f"{speed[key]:.1f} MB/s", ratio)
    rows = [row("GPT-2 encode, minigpt (fresh tokenizer)", "cold", "tiktoken"),
            row("GPT-2 encode, minigpt (cache warm)", "warm", "tiktoken")]
    if "tiktoken" in speed:
        rows.append(row("GPT-2 encode, tiktoken", "tiktoken", None))
    if "cold beyond" in speed:
        rows.append(row("GPT-2 encode, minigpt (fresh tokenizer), text + one non-ASCII character",
                        "cold beyond", "tiktoken beyond"))
    if "tiktoken beyond" in speed:
        rows.append(row("GPT-2 encode, tiktoken, text + one non-ASCII character", "tiktoken beyond", None))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default=str(ROOT / "shakespeare.txt"),
                        help="UTF-8 text file to train on and encode")
    parser.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary to train")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (median taken)")
    parser.add_argument("--run-lengths", type=int, nargs="*", default=[10_000, 100_000, 1_000_000],
                        help="lengths of the one-chunk scaling rows (none: skip them)")
    parser.add_argument("--run-repeats", type=int, default=3, help="runs per scaling figure")
    args = parser.parse_args(argv)

    text = Path(args.text).read_text(encoding="utf-8")
    megabytes = len(text.encode("utf-8")) / 1e6
    print(f"# {Path(args.text).name}: {megabytes:.2f} MB; {args.repeats} repeats, medians")
    print(f"# {datetime.date.today()}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")

    train_s = statistics.median(
        seconds(lambda: BPETokenizer().train(text, args.vocab_size)) for _ in range(args.repeats))

    gpt2 = BPETokenizer.from_gpt2()
    reference = tiktoken_gpt2()
    rows = [(f"BPE training, vocab {args.vocab_size}", f"{train_s:.2f} s", "")]
    rows += encode_rows(gpt2, reference, text, args.repeats)
    rows += scaling_rows(gpt2, reference, text, args.run_lengths, args.run_repeats, args.vocab_size)
    print("\n| measurement | result | ratio |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
