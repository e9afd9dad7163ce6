"""Write wind_headlines.jsonl: summarisation, a day's wind forecast to its headline.

Each prompt gives the wind at dawn, noon and eve; one of them is a gale or a
storm, and the completion is the headline that keeps what matters, the gale
and when:

    {"prompt": "four at dawn, gale at noon, six at eve. Title: ", "completion": "gale at noon"}

The gale comes first, second or third at random, so copying the first event
is right a third of the time; the first sentence (lead-1, the classic
baseline of summarisation) is the whole list, which holds the headline's
words but three times as many others. Every line draws its events afresh, so
the held-out split (the last tenth) tests the rule: find the gale, say it and
its time. Scored by exact match and by ROUGE-L (`--task-metric rouge_l`).
Every character occurs in shakespeare.txt and every example fits the
Shakespeare model's block of 64 characters.
Running this script again gives the same file.

    python notebooks/data/make_wind_headlines.py
"""
import json
import random
from pathlib import Path

CALM = ["four", "five", "six"]
GALES = ["gale", "storm"]
TIMES = ["dawn", "noon", "eve"]
N = 4000


def example(rng):
    """The wind at dawn, noon and eve, one a gale or a storm, and the headline."""
    gale = rng.randrange(3)
    winds = [rng.choice(GALES) if i == gale else rng.choice(CALM) for i in range(3)]
    events = [f"{w} at {t}" for w, t in zip(winds, TIMES)]
    return {"prompt": ", ".join(events) + ". Title: ", "completion": events[gale]}


def main():
    rng = random.Random(12)
    rows = [example(rng) for _ in range(N)]
    shakespeare = set((Path(__file__).resolve().parents[2] / "shakespeare.txt").read_text(encoding="utf-8"))
    used = set("".join(r["prompt"] + r["completion"] for r in rows))
    assert used <= shakespeare, sorted(used - shakespeare)
    assert max(len(r["prompt"] + r["completion"]) for r in rows) <= 64
    out = Path(__file__).with_name("wind_headlines.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {out}: {len(rows)} examples, the last {N // 10} held out")


if __name__ == "__main__":
    main()
