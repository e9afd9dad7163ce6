"""Tokenizer speed: BPE training time, and GPT-2 encoding throughput side by side with tiktoken.

    python benchmarks/bench_tokenizer.py                     # shakespeare.txt, 5 repeats
    python benchmarks/bench_tokenizer.py --repeats 9 --text some.txt

Every figure is the median of --repeats runs. Each GPT-2 encode starts from a fresh
tokenizer (empty chunk cache), and minigpt and tiktoken take turns in the same loop,
so a busy machine slows both alike. tiktoken is optional: without it only minigpt's
figures are printed. Its GPT-2 encoding is built offline from minigpt's shipped copies
of OpenAI's files (which are the ones tiktoken downloads).
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default=str(ROOT / "shakespeare.txt"),
                        help="UTF-8 text file to train on and encode")
    parser.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary to train")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (median taken)")
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
    if reference is not None:
        assert gpt2.encode(text) == reference.encode(text), "minigpt and tiktoken disagree"
    cold, warm, tik = [], [], []
    for _ in range(args.repeats):
        fresh = BPETokenizer(gpt2.pattern, gpt2.merges, gpt2.special_tokens, gpt2.byte_ids)
        cold.append(seconds(lambda: fresh.encode(text)))
        warm.append(seconds(lambda: fresh.encode(text)))          # every chunk now cached
        if reference is not None:
            tik.append(seconds(lambda: reference.encode(text)))

    rows = [(f"BPE training, vocab {args.vocab_size}", f"{train_s:.2f} s", "")]
    cold_mbs, warm_mbs = megabytes / statistics.median(cold), megabytes / statistics.median(warm)
    rows.append(("GPT-2 encode, minigpt (fresh tokenizer)", f"{cold_mbs:.1f} MB/s", ""))
    rows.append(("GPT-2 encode, minigpt (cache warm)", f"{warm_mbs:.1f} MB/s", ""))
    if tik:
        tik_mbs = megabytes / statistics.median(tik)
        rows.append(("GPT-2 encode, tiktoken", f"{tik_mbs:.1f} MB/s", ""))
        rows[1] = (rows[1][0], rows[1][1], f"{cold_mbs / tik_mbs:.2f}x tiktoken")
        rows[2] = (rows[2][0], rows[2][1], f"{warm_mbs / tik_mbs:.2f}x tiktoken")
    print("\n| measurement | result | ratio |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
