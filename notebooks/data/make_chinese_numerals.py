"""Write chinese_numerals.jsonl: translation, English number words to Chinese numerals.

Each line is a number from 1 to 999 in English words and in Chinese numerals:

    {"prompt": "three hundred and forty-two: ", "completion": "三百四十二"}

The Chinese rules: a digit before 百 (hundred) and 十 (ten), 十 alone for
10-19 (十二, twelve), 一十 after a hundred (一百一十二), and 零 (zero) for a missing
ten before a unit (三百零五, 305). The numbers are shuffled with a fixed seed
and the last HELD_OUT lines, the held-out split of `python -m minigpt.train`,
are 100 numbers that occur nowhere in the first 899, so a right answer means
the rule was learned, not the answer. The English words are those of
roman_numerals.jsonl (make_roman_numerals.py). Running this script again gives the same file.

    python notebooks/data/make_chinese_numerals.py
"""
import json
import random
from pathlib import Path

from make_roman_numerals import words

DIGITS = "零一二三四五六七八九"
HELD_OUT = 100


def chinese(n):
    """1 <= n <= 999 in Chinese numerals: 342 -> '三百四十二', 305 -> '三百零五', 12 -> '十二'."""
    hundreds, rest = divmod(n, 100)
    tens, units = divmod(rest, 10)
    if not hundreds:
        head = ("" if tens == 1 else DIGITS[tens]) + "十" if tens else ""
        return head + (DIGITS[units] if units else "")
    text = DIGITS[hundreds] + "百"
    if tens:
        text += DIGITS[tens] + "十"
    elif units:
        text += "零"
    return text + (DIGITS[units] if units else "")


def main():
    cases = {342: "三百四十二", 305: "三百零五", 12: "十二", 10: "十", 110: "一百一十", 20: "二十", 7: "七", 900: "九百"}
    assert all(chinese(n) == c for n, c in cases.items()), {n: chinese(n) for n in cases}
    numbers = list(range(1, 1000))
    random.Random(15).shuffle(numbers)          # the last HELD_OUT are the held-out split
    lines = [json.dumps({"prompt": f"{words(n)}: ", "completion": chinese(n)}, ensure_ascii=False) + "\n"
             for n in numbers]
    out = Path(__file__).with_name("chinese_numerals.jsonl")
    out.write_text("".join(lines), encoding="utf-8")
    print(f"wrote {out}: {len(lines)} examples, the last {HELD_OUT} held out")


if __name__ == "__main__":
    main()
