"""Learning in context: what a GPT learns from its prompt, with no weight changed.

    curve = loss_by_position(model, val_ids, 200)            # (T,): the loss at each position
    model, log = train_fewshot(examples, GPTConfig(...), 4500)  # letter substitution, prompt loss on
    by_k = accuracy_by_k(val, next_token_right(model, val))  # {k: (accuracy, shown fraction, n)}
    layer, head, score = induction_head(model, val)        # the head that looks back for the letter

`python -m minigpt.incontext positions --ckpt out/ckpt.npz` plots the first;
`python -m minigpt.incontext fewshot notebooks/data/letter_substitution.jsonl`
the rest (see docs/applications.md).

The signature of in-context learning (Olsson et al., 2022, "In-context
learning and induction heads") is a loss that falls with the position in the
context: a token late in the block is predicted better because the model uses
what came before. The few-shot task makes it visible in one number: each
prompt shows k pairs of a substitution that is new in every line, so the
weights cannot hold it, and the accuracy on the next letter rises with k only
if the model reads the pairs. The head that does it attends from the asked
letter to the letter that followed the same letter before: an induction
head.
"""
import numpy as np

from .optim import AdamW, clip_grad_norm, lr_schedule


def loss_by_position(model, ids, n_windows, seed=0, batch=16):
    """Mean next-token loss at each position 0..T-1 over n_windows random windows of ids.

    ids: 1-D token ids of held-out text; T is the model's block size.
    Returns a (T,) float64 array in nats."""
    T = model.config.block_size
    starts = np.random.default_rng(seed).integers(0, len(ids) - T - 1, size=n_windows)
    total = np.zeros(T)
    for i in range(0, n_windows, batch):
        rows = np.stack([ids[s:s + T + 1] for s in starts[i:i + batch]])
        logits = np.asarray(model.forward(rows[:, :-1])[0], dtype=np.float64)     # (B, T, V)
        logits -= logits.max(axis=-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        total -= np.take_along_axis(logp, rows[:, 1:, None], axis=-1)[..., 0].sum(axis=0)
    return total / n_windows


def train_fewshot(examples, config, steps, lr=2e-3, batch_size=32, seed=0, log_every=250, model=None):
    """A GPT trained on task examples with the loss on every token, prompt included.

    Every pair after the first sight of its letter is then a target the model can
    get right only by looking back, so an induction head gets a gradient many
    times per row, not once. Returns (model, [(step, loss), ...])."""
    from .model import GPT
    model = model or GPT(config, seed=seed)
    opt = AdamW(model.params, lr=lr, betas=(0.9, 0.99), weight_decay=0.1)
    rng, log = np.random.default_rng(seed), []
    for step in range(1, steps + 1):
        x, y = examples.get_batch(batch_size, config.block_size, rng, prompt_loss=True)
        _, loss, cache = model.forward(x, y, train=True)
        grads = model.backward(cache)
        clip_grad_norm(grads, 1.0)
        opt.step(grads, lr=lr_schedule(step, lr, lr / 10, min(100, steps // 10), steps))
        if step % log_every == 0 or step == steps:
            log.append((step, float(loss)))
    return model, log


def pairs_shown(prompt):
    """(k, shown): the number of pairs ('xY ' or 'xYx ') before the asked letter, and whether it was among them."""
    *pairs, asked = prompt.split(" ")
    return len(pairs), any(p[0] == asked[0] for p in pairs)


def next_token_right(model, examples, n=None):
    """Whether the greedy next token after each prompt is the completion's first token.

    The prompts run as one padded batch: attention is causal, so the padding after
    a prompt never changes its logits. Returns a bool array of the first n."""
    n = len(examples) if n is None else min(n, len(examples))
    rows = [examples.ids[i][:-1] for i in range(n)]         # the end marker is never an input
    x = np.zeros((n, max(map(len, rows))), dtype=np.int64)
    for r, s in enumerate(rows):
        x[r, :len(s)] = s
    logits = np.asarray(model.forward(x)[0])                  # (n, T, V)
    at = examples.n_prompt[:n] - 1                            # the last prompt position
    guess = logits[np.arange(n), at].argmax(axis=-1)
    return guess == x[np.arange(n), at + 1]


def accuracy_by_k(examples, right):
    """{k: (accuracy, fraction of prompts whose letter was shown, n)} over the examples' prompts."""
    by_k = {}
    for prompt, ok in zip(examples.prompts, right):
        k, shown = pairs_shown(prompt)
        by_k.setdefault(k, []).append((ok, shown))
    return {k: (float(np.mean([r for r, _ in v])), float(np.mean([s for _, s in v])), len(v))
            for k, v in sorted(by_k.items())}


def induction_targets(prompt):
    """Positions a look-back head should attend to from the last prompt position (the
    asked letter): the substitute (an upper-case letter) after each earlier occurrence of
    that letter; the space after a repeated letter ('xYx ') is not one."""
    return [j + 1 for j in range(len(prompt) - 1) if prompt[j] == prompt[-1] and prompt[j + 1].isupper()]


def induction_head(model, examples, n=200):
    """(layer, head, scores) where scores (n_layer, n_head) is the mean attention that the last
    prompt position pays to the substitutes shown for its letter, over held-out prompts that show it."""
    cfg = model.config
    scores, count = np.zeros((cfg.n_layer, cfg.n_head)), 0
    for i in range(min(n, len(examples))):
        p = examples.ids[i][:examples.n_prompt[i]]
        targets = induction_targets(examples.prompts[i])
        if not targets or len(p) != len(examples.prompts[i]):    # char tokens only
            continue
        _, _, caches = model.forward(p[None, :])
        for layer in range(cfg.n_layer):
            att = np.asarray(model.attention_weights(caches, layer))[0, :, -1]     # (nh, T)
            scores[layer] += att[:, targets].sum(axis=1)
        count += 1
    scores /= max(count, 1)
    layer, head = np.unravel_index(np.argmax(scores), scores.shape)
    return int(layer), int(head), scores


# ---------------------------------------------------------------- figures and the command line


def _figure(size=(6.5, 4)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def plot_positions(curve, title):
    """The loss at each position of the context: the signature of in-context learning."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(np.arange(len(curve)), curve, ".-")
    ax.set_xlabel("position in the context (tokens before it)")
    ax.set_ylabel("held-out loss (nats per token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def plot_fewshot(by_k, title, n_letters=6):
    """Accuracy against k, beside chance and a perfect look-up of the letters shown."""
    fig = _figure()
    ax = fig.add_subplot()
    ks = list(by_k)
    ax.plot(ks, [100 * by_k[k][0] for k in ks], "o-", label="model (weights fixed)")
    ax.plot(ks, [100 * (by_k[k][1] + (1 - by_k[k][1]) / n_letters) for k in ks], "--", color="gray",
            label="look up if shown, else guess")
    ax.axhline(100 / n_letters, color="gray", ls=":", label="chance")
    ax.set_xlabel("k, the pairs of the substitution shown in the prompt")
    ax.set_ylabel("held-out accuracy on the next letter (%)")
    ax.set_ylim(0, 102)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_attention(model, prompt, ids, layer, head):
    """One head's attention pattern over a prompt (row: from, column: to)."""
    _, _, caches = model.forward(np.asarray(ids)[None, :])
    att = np.asarray(model.attention_weights(caches, layer))[0, head]
    fig = _figure((5.5, 5))
    ax = fig.add_subplot()
    ax.imshow(att, cmap="Blues", vmin=0, vmax=1)
    labels = [c if c != " " else "␣" for c in prompt]
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("attends to")
    ax.set_ylabel("from")
    ax.set_title(f"layer {layer}, head {head}", fontsize=9)
    return fig


def _positions(args):
    import os
    from .checkpoint import load_model
    from .data import read_text, split
    model, tokenizer = load_model(args.ckpt)
    if tokenizer is None:
        raise ValueError(f"{args.ckpt} holds no tokenizer, so it cannot read {args.text}")
    try:
        ids = np.asarray(tokenizer.encode(split(read_text(args.text))[1]), dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"{args.text} has a character {args.ckpt}'s tokenizer lacks ({e})") from None
    if len(ids) <= model.config.block_size + 1:
        raise ValueError(f"the held-out tenth of {args.text} is shorter than the block")
    curve = loss_by_position(model, ids, args.windows, args.seed)
    print("position: " + " ".join(f"{t}:{curve[t]:.3f}" for t in (0, 1, 2, 4, 8, 16, 32, len(curve) - 1)
                                  if t < len(curve)))
    fig = plot_positions(curve, f"{args.ckpt} on the held-out tenth of {os.path.basename(args.text)}, "
                               f"{args.windows} windows of {len(curve)} tokens")
    _write_figure(fig, args.out)
    print(f"wrote {args.out}")


def _write_figure(fig, path):
    """Save a figure by atomic_write (a rename): never into a file that a link there leads to."""
    import os
    from .fileio import atomic_write
    kind = os.path.splitext(path)[1][1:].lower() or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=kind, dpi=100))


def _fewshot(args):
    import os
    import time
    from . import data, task
    from .model import GPTConfig
    from .tokenizer import CharTokenizer
    pairs = task.read_examples(args.file)
    tokenizer = CharTokenizer(task.task_text(pairs))
    train, val = data.split(task.encode_examples(pairs, tokenizer, args.file))
    block = max(len(s) for s in train.ids) - 1
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=block, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd)
    t = time.perf_counter()
    model, log = train_fewshot(train, config, args.steps, args.lr, args.batch_size, args.seed)
    took = time.perf_counter() - t
    by_k = accuracy_by_k(val, next_token_right(model, val))
    print(f"trained {args.steps} steps in {took:.0f} s; loss " + ", ".join(f"{s}: {v:.3f}" for s, v in log[-3:]))
    for k, (acc, shown, n) in by_k.items():
        print(f"k={k:2d}: accuracy {100 * acc:5.1f}% of {n}; the letter was shown in {100 * shown:5.1f}%")
    layer, head, scores = induction_head(model, val)
    print(f"look-back head: layer {layer}, head {head}, {scores[layer, head]:.2f} of its attention on "
          f"the earlier substitutes (per head: {np.round(scores, 2).tolist()})")
    os.makedirs(args.out_dir, exist_ok=True)
    title = f"{args.n_layer} layers x {args.n_embd} wide, {args.steps} steps ({took / 60:.1f} min)"
    _write_figure(plot_fewshot(by_k, title), os.path.join(args.out_dir, "fewshot_accuracy.png"))
    i = max(range(min(200, len(val))), key=lambda i: len(induction_targets(val.prompts[i])))
    ids = val.ids[i][:val.n_prompt[i]]
    _write_figure(plot_attention(model, val.prompts[i], ids, layer, head),
                  os.path.join(args.out_dir, "induction_head.png"))
    print(f"wrote {args.out_dir}/fewshot_accuracy.png and induction_head.png")
    if args.save:
        from .checkpoint import save_checkpoint
        save_checkpoint(args.save, model, tokenizer=tokenizer, iter_num=args.steps,
                        train_args={"file": args.file, "steps": args.steps, "lr": args.lr, "seed": args.seed})
        print(f"wrote {args.save}")


def main(argv=None):
    import argparse
    import sys
    p = argparse.ArgumentParser(prog="python -m minigpt.incontext", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    q = sub.add_parser("positions", help="the held-out loss at each position of the context")
    q.add_argument("--ckpt", default="out/ckpt.npz", help="a trained checkpoint (default: %(default)s)")
    q.add_argument("--text", default="shakespeare.txt",
                   help="its text; the last tenth is held out (default: %(default)s)")
    q.add_argument("--windows", type=int, default=400, help="random held-out windows averaged (default: %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="seed of the windows (default: %(default)s)")
    q.add_argument("--out", default="loss_by_position.png", help="the figure (default: %(default)s)")
    f = sub.add_parser("fewshot", help="train on few-shot prompts, then accuracy against k and the look-back head")
    f.add_argument("file", help="a few-shot task, e.g. notebooks/data/letter_substitution.jsonl")
    f.add_argument("--out-dir", default="out-fewshot", help="folder for the figures (default: %(default)s)")
    f.add_argument("--steps", type=int, default=4500, help="optimizer steps (default: %(default)s)")
    f.add_argument("--n-layer", type=int, default=2, help="blocks (default: %(default)s)")
    f.add_argument("--n-head", type=int, default=2, help="heads per block (default: %(default)s)")
    f.add_argument("--n-embd", type=int, default=32, help="width (default: %(default)s)")
    f.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: %(default)s)")
    f.add_argument("--batch-size", type=int, default=32, help="prompts per step (default: %(default)s)")
    f.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    f.add_argument("--save", metavar="NPZ", help="also save the trained model (weights and tokenizer) there")
    args = p.parse_args(argv)
    from .fileio import FileError
    for name in ("windows", "steps", "n_layer", "n_head", "n_embd", "batch_size"):
        if getattr(args, name, 1) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    try:
        (_positions if args.what == "positions" else _fewshot)(args)
    except (OSError, ValueError, FileError) as e:    # DataError and CheckpointError are ValueErrors
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
