"""Attention maps of a trained model: `python -m minigpt.attention`.

    python -m minigpt.attention --ckpt out/ckpt.npz --prompt "ROMEO:" --out att.png
    python -m minigpt.attention --ckpt out/ckpt.npz --prompt "ROMEO:" --layer 1 --out att1.png

One forward pass over the prompt, then one panel per head of every block (a row per
layer): row t of a panel is how the token at position t spreads its attention over the
positions s <= t, drawn as notebook 01 draws them, with the tokens on the axes, the future
positions (masked, s > t) left blank and one colour scale from 0 to 1 with its bar.
"""

if __name__ == "__main__" and not __package__:    # `python minigpt/attention.py`: run it as a module
    import os, runpy, sys                           # noqa: E401 (before any relative import)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("minigpt.attention", run_name="__main__", alter_sys=True)
    sys.exit(0)

import argparse
import sys

import numpy as np

from .backend import to_numpy

SHOWN = {" ": "\u2423", "\n": "\\n", "\t": "\\t", "\r": "\\r"}     # blanks made visible


def attention_maps(model, ids):
    """[(nh, T, T) host array per block]: the attention weights of model on the ids (T,)."""
    _, _, caches = model.forward(np.asarray([ids]))
    return [to_numpy(model.attention_weights(caches, i))[0] for i in range(model.config.n_layer)]


def token_labels(tokenizer, ids):
    """Each token's own text, its blanks made visible (U+2423 for a space, \\n for a newline)."""
    labels = []
    for i in ids:
        text = tokenizer.decode([int(i)])
        labels.append("".join(SHOWN.get(ch, ch) for ch in text) or "\u2205")
    return labels


def draw(maps, labels, title="", layers=None):
    """A matplotlib Figure (Agg canvas, no display) with one panel per head of the given layers
    (default all): the tokens on both axes, masked entries blank, a colour bar. Returns
    (figure, panels), panels[row][head] the Axes of one head."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    layers = list(range(len(maps))) if layers is None else list(layers)
    nh, T = maps[0].shape[0], maps[0].shape[-1]
    side = max(2.4, 0.16 * T + 1.0)                      # room for T labels per panel
    fig = Figure(figsize=(side * nh + 1.2, side * len(layers) + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(layers), nh, squeeze=False)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)   # s > t: masked, drawn blank
    size = max(4, min(9, 240 / max(T, 1) / 1.5))
    image = None
    for row, layer in enumerate(layers):
        for h in range(nh):
            ax = grid[row][h]
            image = ax.imshow(np.ma.masked_where(future, maps[layer][h]), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer}, head {h}", fontsize=10)
            ax.set_xticks(range(T), labels, rotation=90, fontsize=size)
            ax.set_yticks(range(T), labels, fontsize=size)
    fig.supxlabel("key position s (attended to)")
    fig.supylabel("query position t")
    if title:
        fig.suptitle(title)
    fig.colorbar(image, ax=grid, shrink=0.8, label="attention weight")
    return fig, [list(r) for r in grid]


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minigpt.attention",
                                description="Draw every head's attention weights for a prompt as a PNG.")
    p.exit_on_error = True
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="a checkpoint written by python -m minigpt.train")
    src.add_argument("--pretrained", metavar="DIR", help="a GPT-2 directory (config.json, "
                     "model.safetensors, vocab.json + merges.txt)")
    p.add_argument("--prompt", required=True, help="the text whose attention is drawn (its last "
                   "block-size tokens if longer)")
    p.add_argument("--out", default="attention.png", help="the PNG to write (default attention.png)")
    p.add_argument("--layer", type=int, action="append", metavar="N",
                   help="draw only block N (repeatable; default: every block)")
    return p


def _fail(message):
    print(f"python -m minigpt.attention: error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    parser = build_parser()
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")
    args = parser.parse_args(argv)
    from .checkpoint import CheckpointError
    from .fileio import FileError, atomic_write
    from .sample import encode_prompt
    if not args.out.lower().endswith(".png"):
        return _fail(f"--out {args.out!r} must name a .png file")
    try:
        if args.ckpt is not None:
            from .checkpoint import load_model
            model, tokenizer = load_model(args.ckpt)
        else:
            from .pretrained import load_pretrained
            model, tokenizer = load_pretrained(args.pretrained)
        if tokenizer is None:
            return _fail(f"{args.ckpt} holds no tokenizer, so the prompt cannot be encoded")
        n = model.config.n_layer
        bad = [k for k in args.layer or () if not 0 <= k < n]
        if bad:
            return _fail(f"--layer {bad[0]}: the model has blocks 0..{n - 1}")
        if not args.prompt:
            return _fail("--prompt is empty: give the text whose attention to draw")
        ids = encode_prompt(tokenizer, args.prompt)[-model.config.block_size:]
        maps = attention_maps(model, ids)
        fig, _ = draw(maps, token_labels(tokenizer, ids), f"attention of every head on {args.prompt!r}",
                      args.layer)
        atomic_write(args.out, lambda f: fig.savefig(f, format="png", dpi=100))
    except (CheckpointError, FileError, OSError, ValueError) as e:
        return _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    print(f"wrote {args.out}: {len(args.layer or range(n))} layer(s) x {model.config.n_head} heads "
          f"over {len(ids)} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
