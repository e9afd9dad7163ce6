"""Write letter_substitution.jsonl: a few-shot task, learned in context.

Each line draws a new letter substitution (a random permutation of a-f onto
A-F), shows k pairs of it in the prompt, and asks for one more letter; the
completion is its substitute:

    {"prompt": "cFc aBa cFc eDe a", "completion": "B", "k": 4}

Each pair is written letter, substitute, letter again ("cFc"). The repeat is
the help that lets a small model learn the look-up in minutes: predicting it
needs only a head that attends to the token just before (from F, one back to
c), and once that previous-token head exists, the second layer can find
"the position whose previous token is the asked letter" and copy the
substitute there. Without the repeat (pairs "cF"), 2-layer models stayed at
chance for 9,000 steps (docs/applications.md).

The pairs are drawn with replacement, so a letter can come back, and the
asked letter is any of the six. Since the substitution is new in every line,
nothing about it can be stored in the weights: the model can only read it off
the pairs before. With k pairs shown, the asked letter has been shown with
probability 1 - (5/6)^k; a model that looks back for it and copies what
followed it (an induction head: the current token, found earlier, and the
token after it copied) gets those right, and its accuracy rises with k
with no weight changed. k runs from 0 to 14 (the key "k", which minigpt
ignores, records it); the last tenth of the lines is held out.
The order comes from a fixed seed: running this script again gives the same file.

    python notebooks/data/make_letter_substitution.py
"""
import json
import random
from pathlib import Path

LETTERS = "abcdef"
MAX_K, N = 14, 15000


def example(rng, k):
    """A random substitution shown as k pairs, and a question about one letter."""
    sub = dict(zip(LETTERS, rng.sample(LETTERS.upper(), len(LETTERS))))
    shown = [rng.choice(LETTERS) for _ in range(k)]
    asked = rng.choice(LETTERS)
    prompt = "".join(f"{a}{sub[a]}{a} " for a in shown) + asked
    return {"prompt": prompt, "completion": sub[asked], "k": k}


def main():
    rng = random.Random(7)
    rows = [example(rng, i % (MAX_K + 1)) for i in range(N)]
    rng.shuffle(rows)
    out = Path(__file__).with_name("letter_substitution.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {out}: {len(rows)} examples, the last {N // 10} held out")


if __name__ == "__main__":
    main()
