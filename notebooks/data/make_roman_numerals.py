"""Write roman_numerals.jsonl: a small task for fine-tuning (notebook 06).

Each line is one example, a number in English words and its Roman numeral:

    {"prompt": "three hundred and forty-two: ", "completion": "CCCXLII"}

for every number from 1 to 999, in a shuffled order. The last 100 lines are
the held-out split: `python -m minigpt.train` validates on the last 10% of the
examples, and these 100 numbers occur nowhere in the first 899 lines, so the
exact-match score on them measures whether the model learned the rule (three
hundred -> CCC, forty -> XL, two -> II) rather than memorised answers. Every
answer can be checked exactly, and every character occurs in shakespeare.txt,
so a character-level model pre-trained on Shakespeare can read the task.
The order comes from a fixed seed: running this script again gives the same file.

    python notebooks/data/make_roman_numerals.py
"""
import json
import random
from pathlib import Path

UNITS = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
# the Roman numeral of each digit, for units, tens and hundreds
ROMAN = [["", "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX"],
         ["", "X", "XX", "XXX", "XL", "L", "LX", "LXX", "LXXX", "XC"],
         ["", "C", "CC", "CCC", "CD", "D", "DC", "DCC", "DCCC", "CM"]]
HELD_OUT = 100


def words(n):
    """1 <= n <= 999 in British English words: 342 -> 'three hundred and forty-two'."""
    hundreds, rest = divmod(n, 100)
    if rest < 20:
        tail = UNITS[rest]
    else:
        tail = TENS[rest // 10] + ("-" + UNITS[rest % 10] if rest % 10 else "")
    if not hundreds:
        return tail
    return f"{UNITS[hundreds]} hundred" + (f" and {tail}" if tail else "")


def roman(n):
    """1 <= n <= 999 as a Roman numeral: 342 -> 'CCCXLII'."""
    return ROMAN[2][n // 100] + ROMAN[1][n // 10 % 10] + ROMAN[0][n % 10]


def main():
    assert (words(342), roman(342)) == ("three hundred and forty-two", "CCCXLII")
    assert (words(999), roman(999)) == ("nine hundred and ninety-nine", "CMXCIX")
    numbers = list(range(1, 1000))
    random.Random(15).shuffle(numbers)          # the last HELD_OUT are the held-out split
    lines = [json.dumps({"prompt": f"{words(n)}: ", "completion": roman(n)}) + "\n" for n in numbers]
    text = "".join(lines)
    shakespeare = set((Path(__file__).resolve().parents[2] / "shakespeare.txt").read_text(encoding="utf-8"))
    used = set("".join(words(n) + ": " + roman(n) for n in numbers))
    assert used <= shakespeare, sorted(used - shakespeare)
    out = Path(__file__).with_name("roman_numerals.jsonl")
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}: {len(lines)} examples, the last {HELD_OUT} held out")


if __name__ == "__main__":
    main()
