"""Write sea_forecasts.txt: a small corpus for the fine-tuning notebook (04).

Weather bulletins for the seas around an imaginary coast, in a fixed layout:
short, regular and very unlike Shakespeare, so a fine-tuned model's samples
visibly change style. Every word list below is written for minigpt; the
bulletins are drawn from them with a fixed seed, so running this script again
gives the same file. Only characters that also occur in shakespeare.txt are
used, so a character-level model pre-trained on Shakespeare can read it.

    python notebooks/data/make_sea_forecasts.py
"""
import random
from pathlib import Path

AREAS = ["Greyhaven", "Northmere", "Saltcombe", "Farrow Bank", "The Shallows", "Kestrel Point",
         "Blackwater", "Heron Sound", "Maldon Deep", "Whitcliff", "Ember Roads", "Lantern Bay",
         "Cold Harbour", "Gullrock", "Silverstrand", "Wrenmouth"]
TIMES = ["at dawn", "at noon", "at dusk", "at midnight"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DIRECTIONS = ["northerly", "north-easterly", "easterly", "south-easterly", "southerly",
              "south-westerly", "westerly", "north-westerly"]
STRENGTHS = ["three", "four", "five", "six", "seven", "gale eight", "severe gale nine"]
CHANGES = ["backing", "veering", "becoming", "increasing", "decreasing"]
WHEN = ["later", "for a time", "soon", "by evening", "overnight"]
SEAS = ["smooth", "slight", "moderate", "rough", "very rough", "high"]
WEATHER = ["fair", "rain", "showers", "drizzle", "fog patches", "squally showers", "thundery rain",
           "sleet", "wintry showers", "rain at times"]
VISIBILITY = ["good", "moderate", "poor", "very poor", "good, occasionally poor",
              "moderate or poor", "poor, becoming good later"]


def strength_range(i, rng):
    """Force i as 'five', or with the next one as 'five or six'."""
    if rng.random() < 0.5 or i == len(STRENGTHS) - 1:
        return STRENGTHS[i]
    return f"{STRENGTHS[i]} or {STRENGTHS[i + 1]}"


def wind(rng):
    """'westerly four or five, veering northerly six later', and the like."""
    i = rng.randrange(len(STRENGTHS) - 1)
    text = f"{rng.choice(DIRECTIONS + ['variable'])} {strength_range(i, rng)}"
    if rng.random() < 0.6:
        change = rng.choice(CHANGES)
        if change == "increasing":
            j = rng.randrange(i + 1, len(STRENGTHS))
        elif change == "decreasing" and i > 0:
            j = rng.randrange(0, i)
        else:
            change = rng.choice(["backing", "veering", "becoming"])
            j = min(max(i + rng.choice([-1, 0, 1]), 0), len(STRENGTHS) - 1)
        direction = "" if change in ("increasing", "decreasing") else rng.choice(DIRECTIONS) + " "
        text += f", {change} {direction}{strength_range(j, rng)} {rng.choice(WHEN)}"
    return text


def area_report(rng, names):
    weather = rng.choice(WEATHER)
    if rng.random() < 0.5:
        weather += f", then {rng.choice([w for w in WEATHER if w != weather])}"
    i = rng.randrange(len(SEAS))
    sea = SEAS[i] if rng.random() < 0.6 or i == len(SEAS) - 1 else f"{SEAS[i]} or {SEAS[i + 1]}"
    return (f"{', '.join(names)}.\n"
            f"Wind: {wind(rng)}.\n"
            f"Sea: {sea}.\n"
            f"Weather: {weather}.\n"
            f"Visibility: {rng.choice(VISIBILITY)}.\n")


def bulletin(rng):
    areas = AREAS[:]
    rng.shuffle(areas)
    groups, i = [], 0
    while i < len(areas):
        n = rng.choice([1, 1, 2, 2, 3])
        groups.append(areas[i:i + n])
        i += n
    header = f"THE SEA FORECAST FOR {rng.choice(DAYS).upper()}, ISSUED {rng.choice(TIMES).upper()}.\n"
    gales = [a for g in groups for a in g if rng.random() < 0.2]
    if gales:
        listed = gales[0] if len(gales) == 1 else ", ".join(gales[:-1]) + " and " + gales[-1]
        header += f"There are warnings of gales in {listed}.\n"
    return header + "\n" + "\n".join(area_report(rng, g) for g in groups)


def main():
    rng = random.Random(7)
    text = "\n\n".join(bulletin(rng) for _ in range(24))
    shakespeare = set((Path(__file__).resolve().parents[2] / "shakespeare.txt").read_text(encoding="utf-8"))
    assert set(text) <= shakespeare, sorted(set(text) - shakespeare)
    out = Path(__file__).with_name("sea_forecasts.txt")
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}: {len(text):,} characters")


if __name__ == "__main__":
    main()
