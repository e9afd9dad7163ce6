"""Write wind_headlines.jsonl: summarisation, a day's wind forecast to its headline.

Each prompt gives the wind at three times of the day, in order; one of them is
a gale or a storm, and the completion is the headline that keeps what matters,
the gale and when:

    {"prompt": "four at dawn, gale at noon, six at eve. Title: ", "completion": "gale at noon"}

The three times are three of dawn, morn, noon, dusk and eve (10 choices), the
calm winds two of six words, the gale one of two words in one of three places:
2,160 distinct forecasts. The file holds 2,000 of them, drawn without
replacement, so no prompt occurs twice and no held-out prompt (the last tenth)
is a training prompt: the held-out split tests the rule, find the gale, say it
and its time, not memory. The gale comes first, second or third at random, so
copying the first event is right a third of the time; the first clause
(lead-1, the classic baseline of summarisation) is the first event. Scored by
exact match and by ROUGE-L (`--task-metric rouge_l`).
Every character occurs in shakespeare.txt and every example fits the
Shakespeare model's block of 64 characters.
Running this script again gives the same file.

    python notebooks/data/make_wind_headlines.py
"""
import itertools
import json
import random
from pathlib import Path

CALM = ["calm", "one", "two", "four", "five", "six"]
GALES = ["gale", "storm"]
TIMES = ["dawn", "morn", "noon", "dusk", "eve"]
N = 2000


def forecasts():
    """Every forecast: (three times in order, the gale's place, its word, the two calm words)."""
    return list(itertools.product(itertools.combinations(TIMES, 3), range(3), GALES,
                                  itertools.product(CALM, repeat=2)))


def example(times, gale, word, calm):
    """The prompt listing the three winds, and the headline: the gale and its time."""
    calm = iter(calm)
    events = [f"{word if i == gale else next(calm)} at {t}" for i, t in enumerate(times)]
    return {"prompt": ", ".join(events) + ". Title: ", "completion": events[gale]}


def main():
    rng = random.Random(12)
    rows = [example(*f) for f in rng.sample(forecasts(), N)]
    n_train = int(N * 0.9)
    assert not {r["prompt"] for r in rows[:n_train]} & {r["prompt"] for r in rows[n_train:]}
    shakespeare = set((Path(__file__).resolve().parents[2] / "shakespeare.txt").read_text(encoding="utf-8"))
    used = set("".join(r["prompt"] + r["completion"] for r in rows))
    assert used <= shakespeare, sorted(used - shakespeare)
    assert max(len(r["prompt"] + r["completion"]) for r in rows) <= 64
    out = Path(__file__).with_name("wind_headlines.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {out}: {len(rows)} examples of {len(forecasts())}, the last {N - n_train} held out")


if __name__ == "__main__":
    main()
