"""Baselines beside a task's score: trivial answers, and a model before fine-tuning.

    python -m minigpt.task_baselines notebooks/data/qa_passages.jsonl --ckpt out/ckpt.npz

prints the held-out score (exact match, and the --task-metric) of

- the most frequent training answer, answered to every prompt;
- lead-1, the prompt's first clause (up to the first . , ; ? or :), the classic
  baseline of summarisation;
- the first word of the prompt that is an answer somewhere in training (for
  reading comprehension: copy the first fact);
- with --ckpt, that checkpoint's greedy answers: the model before fine-tuning.

A fine-tuned score means something only beside these. Any .jsonl task works;
the held-out split is the one `python -m minigpt.train` scores (the last 10%).
"""
import argparse
import re
import sys
from collections import Counter

from . import task, task_metrics
from .checkpoint import CheckpointError, load_model
from .data import DataError, split
from .fileio import FileError


def trivial_answers(train_completions, prompts):
    """{name: [answer per prompt]} for the three trivial baselines."""
    common = Counter(train_completions).most_common(1)[0][0]
    answers = set(train_completions)

    def first_answer_word(prompt):
        return next((w for w in re.findall(r"[\w'-]+|\S", prompt) if w in answers), "")
    return {"most frequent answer": [common] * len(prompts),
            "lead-1 (first clause)": [re.split(r"[.,;?:]\s", p + " ", maxsplit=1)[0] for p in prompts],
            "first answer-like word": [first_answer_word(p) for p in prompts]}


def score(metric, prompts, completions, answers):
    """{"exact_match": ..., and the metric's key: ...} of the answers against the completions."""
    results = [(p, c, a, a == c) for p, c, a in zip(prompts, completions, answers)]
    return {"exact_match": sum(r[3] for r in results) / max(len(results), 1),
            **task_metrics.scores(metric, results)}


def model_score(ckpt, pairs, metric, n):
    """The checkpoint's score on the first n held-out examples, its tokenizer grown as
    fine-tuning would grow it (new characters get random embeddings, so it cannot write them)."""
    from .tokenizer import CharTokenizer
    model, tokenizer = load_model(ckpt)
    if tokenizer is None:
        raise CheckpointError(f"{ckpt} holds no tokenizer, so its answers cannot be read")
    missing = sorted(set(task.task_text(pairs)) - set(getattr(tokenizer, "chars", "")))
    if isinstance(tokenizer, CharTokenizer) and missing:
        tokenizer = task.add_characters(model, tokenizer, missing)
    examples = task.encode_examples(pairs, tokenizer)
    task.check_fit(examples, model.config.block_size, "the task", fixed_by=ckpt)
    val = split(examples)[1]
    accuracy, results = task.exact_match(model, val, n, tokenizer)
    return {"exact_match": accuracy, **task_metrics.scores(metric, results)}, results


def baselines(path, metric="exact", ckpt=None, n=100):
    """(examples scored, [(name, scores), ...]) for a task file: the trivial baselines, then the checkpoint's."""
    pairs = task.read_examples(path)
    train, val = split(pairs)
    task_metrics.check_references(metric, [c for _, _, c in pairs], [n for n, _, _ in pairs], path)
    val = val[:n]
    prompts, completions = [p for _, p, _ in val], [c for _, _, c in val]
    rows = [(name, score(metric, prompts, completions, answers))
            for name, answers in trivial_answers([c for _, _, c in train], prompts).items()]
    if ckpt:
        rows.append((f"{ckpt} before fine-tuning", model_score(ckpt, pairs, metric, n)[0]))
    return len(val), rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minigpt.task_baselines", description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="a .jsonl task, one {\"prompt\": ..., \"completion\": ...} per line")
    p.add_argument("--ckpt", help="also score this checkpoint's greedy answers (the model before fine-tuning)")
    p.add_argument("--task-metric", default="exact", choices=list(task_metrics.METRICS),
                   help="a score beside exact match, as for minigpt.train (default: %(default)s)")
    p.add_argument("--eval-examples", type=int, default=100, metavar="N",
                   help="held-out examples scored, the first N (default: %(default)s)")
    args = p.parse_args(argv)
    if args.eval_examples < 1:
        print("error: --eval-examples must be at least 1", file=sys.stderr)
        return 2
    try:
        n, rows = baselines(args.file, args.task_metric, args.ckpt, args.eval_examples)
    except (DataError, CheckpointError, FileError, OSError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    keys = list(rows[0][1])
    print(f"{args.file}: the first {n} held-out examples\n{'baseline':<40}" + "".join(f"{k:>14}" for k in keys))
    for name, s in rows:
        print(f"{name:<40}" + "".join(f"{100 * s[k]:>13.1f}%" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
