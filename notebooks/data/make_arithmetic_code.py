"""Write arithmetic_code.jsonl: code generation, a description to a Python expression.

Each prompt describes a computation in words and the completion is a Python
expression that computes it:

    {"prompt": "sum of squares of 1 to 12: ", "completion": "sum(i*i for i in range(1, 12+1))"}

It is scored by execution accuracy (`--task-metric value`): an answer is
right when minigpt.task_metrics' arithmetic evaluator (an ast walk, never
eval) gives it the reference's value, so `3*4+5` and `12+5` both count.
Numbers appear as digits, which the expression copies; what must be learned is
which operation and which Python form each description asks for. Every
(description, numbers) pair is distinct, and the last HELD_OUT lines (the
held-out split of `python -m minigpt.train`) use number pairs that occur with
no template in training, so a right answer comes from the rule, not memory.
Every example fits the Shakespeare model's block of 64 characters.
Running this script again gives the same file.

    python notebooks/data/make_arithmetic_code.py
"""
import json
import random
import sys
from pathlib import Path

TEMPLATES = [                  # (description, expression) with {a} < {b}
    ("the sum of {a} and {b}", "{a}+{b}"),
    ("{a} minus {b}", "{a}-{b}"),
    ("the product of {a} and {b}", "{a}*{b}"),
    ("{a} squared plus {b}", "{a}**2+{b}"),
    ("twice {a} plus {b}", "2*{a}+{b}"),
    ("{b} divided by {a}, rounded down", "{b}//{a}"),
    ("the remainder of {b} divided by {a}", "{b}%{a}"),
    ("the larger of {a} and {b}", "max({a}, {b})"),
    ("the sum of {a} to {b}", "sum(range({a}, {b}+1))"),
    ("sum of squares of {a} to {b}", "sum(i*i for i in range({a}, {b}+1))"),
]
N_PAIRS, HELD_OUT_PAIRS = 500, 50


def main():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from minigpt.task_metrics import arithmetic
    rng = random.Random(3)
    pairs = set()
    while len(pairs) < N_PAIRS:                  # a < b, so ranges are never empty
        a = rng.randrange(1, 40)
        b = rng.randrange(a + 1, 60)
        pairs.add((a, b))
    pairs = sorted(pairs)
    rng.shuffle(pairs)
    held, train = pairs[:HELD_OUT_PAIRS], pairs[HELD_OUT_PAIRS:]

    def rows(number_pairs):
        out = [{"prompt": f"{d.format(a=a, b=b)}: ", "completion": e.format(a=a, b=b)}
               for a, b in number_pairs for d, e in TEMPLATES]
        rng.shuffle(out)
        return out
    lines = rows(train)
    lines += rows(held)[:len(lines) // 9]       # a tenth of the file: the held-out split
    for r in lines:
        arithmetic(r["completion"])             # every reference is one the evaluator scores
    assert max(len(r["prompt"] + r["completion"]) for r in lines) <= 64    # the Shakespeare block
    out = Path(__file__).with_name("arithmetic_code.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    print(f"wrote {out}: {len(lines)} examples, the last {len(lines) // 10} held out")


if __name__ == "__main__":
    main()
