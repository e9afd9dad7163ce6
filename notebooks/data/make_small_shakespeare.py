"""Write shakespeare_char_small.npz: notebook 04's pre-trained model, for notebook 06.

A character-level model of 2 layers, 4 heads, 64 wide, block 64 (about 108
thousand parameters), trained for 1,200 steps of 16 windows with
`python -m minigpt.train shakespeare.txt` and exactly the flags and seed of
notebook 04's pre-training, so its weights are those of notebook 04's
checkpoint (a minute or two on a 2-core CPU). Only its weights, tokenizer and flags are kept, not the
optimizer state: about 0.4 MB, loaded by minigpt.checkpoint without pickle.
Notebook 06 fine-tunes it for a task in seconds, where the default-size
model of the 5-minute run would take minutes.

    python notebooks/data/make_small_shakespeare.py
"""
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from minigpt import train  # noqa: E402
from minigpt.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

FLAGS = ["--n-layer", "2", "--n-head", "4", "--n-embd", "64", "--block-size", "64", "--batch-size", "16",
         "--max-time", "0", "--max-iters", "1200", "--lr", "3e-3", "--min-lr", "3e-4", "--warmup-iters", "50",
         "--eval-interval", "200", "--log-interval", "200", "--eval-iters", "20", "--sample-tokens", "0",
         "--seed", "0", "--device", "cpu"]                   # notebook 04's pre-training, flag for flag


def main():
    out = Path(__file__).with_name("shakespeare_char_small.npz")
    with tempfile.TemporaryDirectory() as tmp:
        status = train.main([str(ROOT / "shakespeare.txt"), "--out-dir", tmp, *FLAGS])
        if status:
            sys.exit(status)
        ck = load_checkpoint(Path(tmp) / "ckpt.npz")
    args = {k: v for k, v in ck["train_args"].items() if k not in ("file", "out_dir")}
    save_checkpoint(out, ck["model"], tokenizer=ck["tokenizer"], iter_num=ck["iter_num"],
                    best_val_loss=ck["best_val_loss"], train_args=dict(args, file="shakespeare.txt"))
    print(f"wrote {out}: {out.stat().st_size / 1e6:.2f} MB, val loss {ck['best_val_loss']:.3f}")


if __name__ == "__main__":
    main()
