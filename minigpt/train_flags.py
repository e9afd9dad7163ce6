"""Train a GPT on any text file: `python -m minigpt.train shakespeare.txt`.

The command line of `minigpt.train`: every flag with its help and default
(`build_parser`), and the checks on their values (`check_args`, `check_start`)
that turn a flag that cannot work into one line and exit status 2.
"""
import argparse
import math

from .checkpoint import _short
from .run import UsageError, check_types

MAX_COUNT = 10**12             # no count flag (steps, batches, tokens, layers) can sensibly exceed this
MAX_MINUTES = 10**6            # --max-time: about two years
MAX_SEED = 2**63 - 1


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line on stderr and exit status 2, instead of argparse's usage block."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser():
    """The command line, with the defaults chosen for a 2-core laptop CPU."""
    p = _Parser(prog="python -m minigpt.train", description=__doc__.split("\n\n")[0])
    d = " (default: %(default)s)"
    p.add_argument("file", help="UTF-8 text file to train on, or a .jsonl file of task examples, one "
                   '{"prompt": ..., "completion": ...} per line: the loss counts the completion and the '
                   "end marker, <|endoftext|> for --tokenizer gpt2, a newline otherwise (see docs/finetune.md)")
    p.add_argument("--out-dir", default="out", metavar="DIR",
                   help="folder for ckpt.npz, metrics.jsonl, loss.png and the token cache" + d)
    p.add_argument("--overwrite", action="store_true", help="start afresh even if DIR/ckpt.npz exists")
    p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"),
                   help="cuda needs CuPy; auto picks cuda when a GPU is there" + d)
    p.add_argument("--tf32", action="store_true",
                   help="on the GPU, TF32 tensor-core matmuls: faster, their inputs rounded to a 10-bit "
                        "mantissa (default: strict float32; an error on the CPU)")
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer", default="char", choices=("char", "bpe", "gpt2"),
                   help="one token per character, BPE trained on FILE, or GPT-2's BPE" + d)
    g.add_argument("--vocab-size", type=int, metavar="N", help="vocabulary size for --tokenizer bpe (default: 512)")
    g = p.add_argument_group("model")
    g.add_argument("--n-layer", type=int, default=2, metavar="N", help="transformer blocks" + d)
    g.add_argument("--n-head", type=int, default=4, metavar="N", help="attention heads per block" + d)
    g.add_argument("--n-embd", type=int, default=128, metavar="C",
                   help="width of the residual stream, divisible by --n-head" + d)
    g.add_argument("--block-size", type=int, default=64, metavar="T", help="context length in tokens" + d)
    g.add_argument("--dropout", type=float, default=0.0, metavar="P", help="dropout probability in training" + d)
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=24, metavar="B", help="sequences per micro-batch" + d)
    g.add_argument("--grad-accum", type=int, default=1, metavar="N", help="micro-batches per optimizer step" + d)
    g.add_argument("--max-iters", type=int, metavar="N",
                   help="optimizer steps (default: as many as fit in --max-time)")
    g.add_argument("--max-time", type=float, default=4.75, metavar="MINUTES",
                   help="wall-clock budget for the whole command; the number of iterations and the "
                        "learning-rate schedule are fitted to it from the measured speed; 0: none" + d)
    g.add_argument("--lr", type=float, default=2e-3, help="peak learning rate" + d)
    g.add_argument("--min-lr", type=float, default=2e-4, help="learning rate at the end of the cosine" + d)
    g.add_argument("--warmup-iters", type=int, default=100, metavar="N", help="linear warm-up steps" + d)
    g.add_argument("--lr-decay-iters", type=int, metavar="N",
                   help="length of the cosine schedule (default: the planned number of iterations)")
    g.add_argument("--weight-decay", type=float, default=0.1, metavar="WD",
                   help="AdamW weight decay on matrices and embeddings" + d)
    g.add_argument("--beta2", type=float, default=0.99, help="AdamW's second-moment decay" + d)
    g.add_argument("--grad-clip", type=float, default=1.0, metavar="NORM",
                   help="clip the global gradient norm to this; 0: no clipping" + d)
    g = p.add_argument_group("logging, evaluation and checkpoints")
    g.add_argument("--log-interval", type=int, default=200, metavar="N", help="steps between log lines" + d)
    g.add_argument("--eval-interval", type=int, metavar="N",
                   help="steps between evals (each saves the checkpoint and redraws loss.png); the run "
                        "also ends with one (default: at the start and at each tenth of the run up to the "
                        "eighth, by time or by iterations, whichever is further)")
    g.add_argument("--eval-iters", type=int, default=100, metavar="N",
                   help="batches per split that each eval averages the loss over" + d)
    g.add_argument("--eval-examples", type=int, default=100, metavar="N",
                   help="for a .jsonl task: held-out examples answered greedily and scored for exact "
                        "match at each eval" + d)
    g.add_argument("--task-metric", default="exact", choices=("exact", "value", "rouge_l"),
                   help="for a .jsonl task, a score beside exact match at each eval: value, the answer "
                        "evaluates to the completion's value (arithmetic only, see minigpt/task_metrics.py); "
                        "rouge_l, word overlap in order (see docs/applications.md)" + d)
    g.add_argument("--sample-tokens", type=int, default=400, metavar="N",
                   help="length of the sample printed at the end; 0: no samples" + d)
    g.add_argument("--seed", type=int, default=1337, help="seed for the weights, batches and dropout" + d)
    g = p.add_argument_group("starting point")
    g.add_argument("--resume", action="store_true", help="continue the run in --out-dir exactly where it stopped")
    g.add_argument("--init-from", metavar="CKPT", help="fine-tune the model in CKPT on FILE, keeping its tokenizer")
    g.add_argument("--init-from-pretrained", metavar="DIR",
                   help="fine-tune GPT-2 weights from DIR (config.json, model.safetensors, tokenizer files)")
    return p


def parse_args(argv):
    """The parsed arguments, and the set of flags given explicitly on the command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    unset = object()                 # argparse fills in defaults only for attributes not yet set
    probe = parser.parse_args(argv, namespace=argparse.Namespace(**{k: unset for k in vars(args)}))
    return args, {k for k, v in vars(probe).items() if v is not unset}


def check_args(args):
    """UsageError for any flag value that cannot work."""
    check_types(args, build_parser())
    positive = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum",
                "log_interval", "eval_iters", "eval_examples")
    optional = tuple(n for n in ("max_iters", "lr_decay_iters", "eval_interval") if getattr(args, n) is not None)
    for name in positive + optional:
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {_short(getattr(args, name))}")
    for name in positive + optional + ("warmup_iters", "sample_tokens") + ("vocab_size",) * (args.vocab_size is not None):
        if getattr(args, name) > MAX_COUNT:
            raise UsageError(f"--{name.replace('_', '-')} must be at most {MAX_COUNT:,}, got {_short(getattr(args, name))}")
    if getattr(args, "task_metric", "exact") != "exact" and not args.file.lower().endswith(".jsonl"):
        raise UsageError(f"--task-metric {args.task_metric} scores the answers of a .jsonl task, "
                         f"and {args.file} is text")
    if args.n_embd % args.n_head:
        raise UsageError(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head}: "
                         f"pick a width that is a multiple of the head count")
    if not 0.0 <= args.dropout < 1.0:
        raise UsageError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.vocab_size is not None and (args.tokenizer != "bpe" or args.vocab_size <= 256):
        raise UsageError("--vocab-size applies to --tokenizer bpe only, and must exceed 256")
    if not (args.lr > 0 and 0 <= args.min_lr <= args.lr):
        raise UsageError(f"need --lr > 0 and 0 <= --min-lr <= --lr (got {args.lr} and {args.min_lr})")
    for name in ("lr", "min_lr", "max_time", "weight_decay", "grad_clip", "beta2", "dropout"):
        if not math.isfinite(getattr(args, name)):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number, got {_short(getattr(args, name))}")
    if args.max_time < 0 or args.warmup_iters < 0 or args.sample_tokens < 0:
        raise UsageError("--max-time, --warmup-iters and --sample-tokens cannot be negative")
    if args.weight_decay < 0 or args.grad_clip < 0:
        raise UsageError("--weight-decay and --grad-clip cannot be negative (--grad-clip 0: no clipping)")
    if not 0.0 <= args.beta2 < 1.0:
        raise UsageError(f"--beta2 must be in [0, 1), got {args.beta2}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed must be 0 or more, and below 2**63, got {_short(args.seed)}")
    if args.max_time > MAX_MINUTES:
        raise UsageError(f"--max-time must be at most {MAX_MINUTES:,} minutes, got {_short(args.max_time)}")
    if not args.out_dir or not args.file:
        raise UsageError("FILE and --out-dir cannot be empty")
    if not args.max_time and args.max_iters is None:
        raise UsageError("with --max-time 0, give --max-iters (otherwise training never ends)")


def check_start(args):
    """UsageError unless at most one of --resume, --init-from and --init-from-pretrained is given."""
    starts = [f for f in ("resume", "init_from", "init_from_pretrained") if getattr(args, f)]
    if len(starts) > 1:
        raise UsageError("use only one of --resume, --init-from and --init-from-pretrained")
