"""Watching a training run: the time budget, metrics.jsonl, loss.png and MFU.

Nothing here touches the model: `train.py` reports what it measured and asks
how many iterations still fit before the deadline.
"""
import json
import math

from .fileio import atomic_write, loads_json, read_regular_text


class TimeBudget:
    """Fits the number of iterations to a wall-clock deadline from the measured speed.

    The plan keeps room for the evals still to come and for the end of the run
    (a final eval, checkpoint and sample), so the whole command ends in time.
    """

    def __init__(self, deadline, eval_interval, eval_iters, grad_accum, sample_tokens, margin_s=3.0):
        self.deadline = deadline                   # time.perf_counter() value; math.inf for none
        self.eval_interval, self.eval_iters = eval_interval, eval_iters
        self.grad_accum, self.sample_tokens, self.margin_s = grad_accum, sample_tokens, margin_s
        self.iters, self.seconds = 0, 0.0          # timed training iterations (evals excluded)
        self.eval_s = None                         # the last eval's duration
        self.sample_s_per_token = 0.005            # a guess until a sample has been timed
        self.warm_s_iter = None                    # seconds per iteration over the warm-up
        self.guess_s_iter = None                   # a step's cost timed at the start (plan.py)

    @property
    def s_iter(self):
        """Measured seconds per training iteration (None before the first measurement):
        over the log windows, or over the warm-up until the first window ends."""
        return self.seconds / self.iters if self.iters else self.warm_s_iter

    def warm_up(self, n_iters, seconds):
        """A first, short measurement to plan from until the first log window is timed."""
        self.warm_s_iter = seconds / n_iters

    def observe(self, n_iters, seconds):
        self.iters += n_iters
        self.seconds += seconds

    def eval_seconds(self):
        """An eval's duration: measured, or estimated as 2 splits of forward-only passes."""
        if self.eval_s is not None:
            return self.eval_s
        return 2 * self.eval_iters * self._s_iter() / (3 * self.grad_accum)

    def _s_iter(self):
        """Seconds per iteration: measured, else the start-up guess, else 0."""
        return self.s_iter or self.guess_s_iter or 0.0

    def reserve(self):
        """Seconds to keep for the end of the run: final eval, checkpoint, sample, margin."""
        return self.eval_seconds() + self.sample_tokens * self.sample_s_per_token + self.margin_s

    def per_iter(self):
        """Seconds per iteration with the periodic evals spread over them."""
        return self._s_iter() + self.eval_seconds() / self.eval_interval

    def fits_another(self, now):
        """True while one more iteration still leaves the reserve before the deadline (during
        the warm-up, the start-up guess of a step's cost stands in for the measurement)."""
        return now + self._s_iter() + self.reserve() <= self.deadline

    def plan(self, it, now, max_iters=None):
        """The total number of iterations to run: what fits in the time left, capped by max_iters."""
        cap = max_iters if max_iters is not None else math.inf
        if self.s_iter is None or math.isinf(self.deadline):
            return cap
        fit = it + max(0, int((self.deadline - now - self.reserve()) / self.per_iter()))
        return min(cap, fit)

    def eta(self, it, total):
        """Seconds until the run ends, or None if the total is not known yet."""
        if self.s_iter is None or math.isinf(total):
            return None
        return (total - it) * self.per_iter() + self.reserve()


def fmt_time(seconds):
    """125.3 -> '2m05s'; None -> '?'."""
    if seconds is None:
        return "?"
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Utilization:
    """Model FLOPs utilization: achieved training FLOP/s over the matmul peak.

    The peak is measured once, briefly, at start-up; on a busy machine that reading comes out
    low. Achieved FLOP/s are a lower bound on the peak, so a faster window raises it and the
    figure never passes 100%."""

    def __init__(self, flops_per_token, peak):
        self.flops_per_token, self.peak = flops_per_token, peak

    def percent(self, tok_per_s):
        self.peak = max(self.peak, tok_per_s * self.flops_per_token)
        return 100 * tok_per_s * self.flops_per_token / self.peak


def log_line(it, total, loss, lr, dt, n_iters, tokens_per_iter, mfu=None, eta=None):
    """The log line for n_iters steps that took dt seconds; returns (line, tokens per second).
    mfu: a Utilization (or None); eta: seconds left or None."""
    tok_per_s = tokens_per_iter * n_iters / dt
    extra = f" | MFU {mfu.percent(tok_per_s):.1f}%" if mfu else ""
    return (f"iter {it:5d}/{total} | loss {loss:.4f} | lr {lr:.2e} | {1000 * dt / n_iters:.1f} ms/iter | "
            f"{tok_per_s:,.0f} tok/s{extra} | ETA {fmt_time(eta)}"), tok_per_s


def write_metrics(path, records):
    """metrics.jsonl: one JSON object per eval, rewritten whole and atomically."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_metrics(path, up_to_iter):
    """The eval records an earlier run wrote, up to a checkpoint's iteration ([] if none).
    A line that is not a whole record (damaged, edited, cut short) is skipped."""
    try:                                       # lines end at "\n" only: U+2028 may sit in a JSON string
        lines = [line.rstrip("\r") for line in read_regular_text(path, "metrics file").split("\n")]
    except (OSError, ValueError):
        return []
    records = []
    for line in filter(str.strip, lines):
        try:
            r = loads_json(line)
        except ValueError:
            continue
        if _is_record(r) and r["iter"] <= up_to_iter:
            records.append(r)
    return records


def _is_record(r):
    def number(v):                             # a loss: finite and 0 or more
        return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf
    return (isinstance(r, dict) and isinstance(r.get("iter"), int) and not isinstance(r["iter"], bool)
            and r["iter"] >= 0 and number(r.get("train_loss")) and number(r.get("val_loss")))


def plot_losses(path, records):
    """loss.png: train and val loss against iterations (matplotlib's Agg canvas, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    its = [r["iter"] for r in records]
    ax.plot(its, [r["train_loss"] for r in records], "o-", label="train")
    ax.plot(its, [r["val_loss"] for r in records], "o-", label="val")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    if any("exact_match" in r for r in records):      # a task run: its held-out accuracy too
        acc = [(r["iter"], 100 * r["exact_match"]) for r in records if "exact_match" in r]
        ax2 = ax.twinx()
        ax2.plot(*zip(*acc), "^-", color="tab:green", label="exact match (held out)")
        for key, color in (("value_match", "tab:purple"), ("rouge_l", "tab:red")):   # --task-metric
            points = [(r["iter"], 100 * r[key]) for r in records
                      if isinstance(r.get(key), (int, float)) and not isinstance(r[key], bool)]
            if points:
                ax2.plot(*zip(*points), "v-",
                         color=color, label=key.replace("_", " ") + " (held out)")
        ax2.set_ylim(-2, 102)
        ax2.set_ylabel("held-out score (%)")
        ax2.legend(loc="upper center")
    ax.legend()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


def flops_and_peak(config, n_ranks=1):
    """A Utilization (training FLOPs per token, the matmul peak FLOP/s of n_ranks processes)
    from minigpt.flops, or None without it."""
    try:
        from .flops import flops_per_token, measure_matmul_peak
    except ImportError:
        return None
    return Utilization(flops_per_token(config), measure_matmul_peak() * 1e9 * n_ranks)
