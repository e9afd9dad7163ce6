"""Write qa_passages.jsonl: reading comprehension, the answer is in the prompt.

Each prompt is a short passage of facts about where people are, then a
question about one of them; the completion is the place:

    {"prompt": "Al is in Rome. Bo is in Oslo. Ed is in Lima. Where is Bo? ", "completion": "Oslo"}

Every passage pairs names and places at random, so no answer can be
memorised: the model must find the name of the question in the passage and
copy the place after it. The training lines mix passages of one, two and three
facts (the short ones teach the look-up quickly); the last HELD_OUT lines, the
held-out split of `python -m minigpt.train`, all have three facts, so copying
a place at random is right one time in three. Names and places each start with
their own letter, every character occurs in shakespeare.txt, and the longest
example fits the Shakespeare model's block of 64 characters.
The order comes from a fixed seed: running this script again gives the same file.

    python notebooks/data/make_qa_passages.py
"""
import json
import random
from pathlib import Path

NAMES = ["Al", "Bo", "Cy", "Di", "Ed", "Jo", "Lu", "Mo", "Ty", "Vi"]
PLACES = ["Rome", "Oslo", "Lima", "Kiev", "Bonn", "Pisa", "Nice", "Deal", "Ayr", "Hull"]
N_TRAIN, HELD_OUT = 5400, 600


def example(rng, n_facts):
    """One passage of n_facts facts, the question and its answer."""
    names, places = rng.sample(NAMES, n_facts), rng.sample(PLACES, n_facts)
    passage = " ".join(f"{n} is in {p}." for n, p in zip(names, places))
    asked = rng.randrange(n_facts)
    return {"prompt": f"{passage} Where is {names[asked]}? ", "completion": places[asked]}


def main():
    rng = random.Random(22)
    rows = [example(rng, rng.choice((1, 2, 3, 3))) for _ in range(N_TRAIN)]
    seen = {r["prompt"] for r in rows}
    held = []
    while len(held) < HELD_OUT:                 # held-out passages never occur in training
        r = example(rng, 3)
        if r["prompt"] not in seen:
            seen.add(r["prompt"])
            held.append(r)
    rows += held
    shakespeare = set((Path(__file__).resolve().parents[2] / "shakespeare.txt").read_text(encoding="utf-8"))
    used = set("".join(r["prompt"] + r["completion"] for r in rows))
    assert used <= shakespeare, sorted(used - shakespeare)
    out = Path(__file__).with_name("qa_passages.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {out}: {len(rows)} examples, the last {HELD_OUT} held out (three facts each)")


if __name__ == "__main__":
    main()
