"""Watching a training run: the time budget, the eval schedule, metrics.jsonl, loss.png and MFU.

Nothing here touches the model: `train.py` reports what it measured and asks
how many iterations still fit before the deadline, and whether an eval is due.
Every decision that depends on the clock is one call here (`TimeBudget.plan`,
`TimeBudget.refit`, `TimeBudget.fits_another`, `EvalSchedule.due`), which the loop
makes through `plan.decide`: under MPI rank 0 makes it and broadcasts the answer.
"""
import json
import math

from .fileio import atomic_write, loads_json, read_regular_text


class TimeBudget:
    """Fits the number of iterations to a wall-clock deadline from the measured speed.

    The plan keeps room for the evals still to come and for the end of the run
    (a final eval, checkpoint and sample), so the whole command ends in time.
    """

    REFIT_SHARE = 0.25                             # a refit moves the total a quarter of the way

    def __init__(self, deadline, eval_interval, eval_iters, grad_accum, sample_tokens, margin_s=3.0,
                 schedule=None):
        self.deadline = deadline                   # time.perf_counter() value; math.inf for none
        self.eval_interval, self.eval_iters = eval_interval, eval_iters    # interval None: scheduled
        self.schedule = schedule                   # an EvalSchedule: how many evals are still to come
        self.grad_accum, self.sample_tokens, self.margin_s = grad_accum, sample_tokens, margin_s
        self.iters, self.seconds = 0, 0.0          # timed training iterations (evals excluded)
        self.eval_s = None                         # the last eval's duration
        self.sample_s_per_token = 0.005            # a guess until a sample is timed (plan.py, evals)
        self.warm_s_iter = None                    # seconds per iteration over the warm-up
        self.guess_s_iter = None                   # a step's cost timed at the start (plan.py)
        self.guess_eval_s = None                   # an eval's cost from its batch timed at the start

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
        """An eval's duration: measured; else from the eval batch timed at the start (the fastest
        of a few), scaled by how much slower the measured step is than the one timed with it
        (a forward pass costs what it costs on this machine, not a fixed third of a step);
        else 2 splits of forward-only passes."""
        if self.eval_s is not None:
            return self.eval_s
        if self.guess_eval_s is not None and self.guess_s_iter:   # scaled by the step's measured speed
            return self.guess_eval_s * (self.s_iter / self.guess_s_iter if self.s_iter else 1.0)
        return 2 * self.eval_iters * self._s_iter() / (3 * self.grad_accum)

    def _s_iter(self):
        """Seconds per iteration: measured, else the start-up guess, else 0."""
        return self.s_iter or self.guess_s_iter or 0.0

    def reserve(self):
        """Seconds to keep for the end of the run: final eval, checkpoint, sample, margin."""
        return self.eval_seconds() + self.sample_tokens * self.sample_s_per_token + self.margin_s

    def per_iter(self):
        """Seconds per iteration with the periodic evals (of --eval-interval) spread over them
        (during the warm-up, the start-up guess of a step's cost stands in for the measurement)."""
        spread = self.eval_seconds() / self.eval_interval if self.eval_interval else 0.0
        return self._s_iter() + spread

    def scheduled_evals(self, now=None):
        """Seconds for the scheduled evals still to come (none with an --eval-interval)."""
        if self.eval_interval or self.schedule is None:
            return 0.0
        return self.schedule.left(now, self.eval_seconds()) * self.eval_seconds()

    def fits_another(self, now):
        """True while one more iteration still leaves the reserve before the deadline (during
        the warm-up, the start-up guess of a step's cost stands in for the measurement)."""
        return now + self._s_iter() + self.reserve() <= self.deadline

    def plan(self, it, now, max_iters=None):
        """The total number of iterations to run: what fits in the time left, capped by max_iters."""
        cap = max_iters if max_iters is not None else math.inf
        if self.s_iter is None or math.isinf(self.deadline):
            return cap
        spare = self.deadline - now - self.reserve() - self.scheduled_evals(now)
        fit = it + max(0, int(spare / self.per_iter())) if self.per_iter() > 0 else cap
        return min(cap, fit)

    def refit(self, total, it, now, max_iters=None, interval=None):
        """The plan at a log line. Less than the current total fits: the fit, at once (a machine
        that slowed down must not meet the deadline with the learning rate still high). More
        fits: a quarter of the way there, so the total on the progress line does not jump with
        each window's speed; with fewer than 4 log lines (of `interval` steps) left, 1/lines of
        the way, so the last refits still land on what fits. Never below the iterations done,
        never above max_iters."""
        fit = self.plan(it, now, max_iters)
        if math.isinf(total) or math.isinf(fit) or fit <= total:
            return max(it, fit)
        lines = max(1.0, (fit - it) / interval) if interval else math.inf
        return max(it, total + round(max(self.REFIT_SHARE, 1 / lines) * (fit - total)))

    def eta(self, it, total, now=None):
        """Seconds until the run ends, or None if the total is not known yet."""
        if self.s_iter is None or math.isinf(total):
            return None
        return (total - it) * self.per_iter() + self.reserve() + self.scheduled_evals(now)


class EvalSchedule:
    """When a run evaluates (and so saves its checkpoint and redraws loss.png) before its end.

    With an interval (--eval-interval N): every N iterations, as asked. Without one: at the
    start, then at each tenth of the run up to the eighth (the end's eval comes about a tenth
    after it), checked at log lines or, for a short plan, about 5 times a tenth (plan.check_every). The run's progress is the
    larger of the share of the time budget spent and the share of the planned iterations
    done, so a machine slower than planned still evaluates ten times, and a run capped by
    --max-iters or without a deadline evaluates by iterations. With a deadline, evals keep
    to about a twentieth of the time: one waits until the training since the last has taken
    GAP times an eval's duration; a tenth reached sooner only saves the checkpoint (cheap),
    so a short budget or a busy machine's slow evals evaluate less often but still keep a
    recent checkpoint."""

    GAP = 19
    START_SHARE = 0.1                          # the eval at the start: a tenth of the batches, no sample

    def __init__(self, interval=None, parts=10):
        self.interval, self.parts = interval, parts
        self.done = 0                              # tenths evaluated so far
        self.it0, self.t0, self.deadline, self.last_t = 0, 0.0, math.inf, 0.0

    def begin(self, it, now, deadline):
        """The run (or this resumed part of it) starts at iteration it, time now."""
        self.it0, self.t0, self.deadline, self.last_t = it, now, deadline, now

    def at_start(self):
        """True if the run evaluates before its first step (the loss curve starts at step 0)."""
        return self.interval is None

    def progress(self, it, now, total):
        """How far the run is, 0 to 1: by the clock or by the plan, whichever is further."""
        by_time = 0.0 if math.isinf(self.deadline) else (now - self.t0) / max(1e-9, self.deadline - self.t0)
        by_iter = 0.0 if math.isinf(total) or total <= self.it0 else (it - self.it0) / (total - self.it0)
        return min(1.0, max(by_time, by_iter))

    def due_by_iter(self, it):
        """True if --eval-interval asks for an eval after step it (the same on every rank)."""
        return self.interval is not None and it % self.interval == 0

    def due(self, it, now, total, eval_s):
        """What the loop does after step it (without --eval-interval): "eval" if the next tenth
        of the run is reached and, with a deadline, GAP evals' time has passed since the last;
        "save" (the checkpoint alone) if the tenth is reached sooner; else None. It reads the
        clock, so under MPI only rank 0 calls it (plan.eval_due) and broadcasts the answer."""
        tenth = int(self.progress(it, now, total) * self.parts + 1e-9)
        if self.interval is not None or not self.done < tenth < self.parts - 1:
            return None
        self.done = tenth
        if not math.isinf(self.deadline) and now - self.last_t < self.GAP * eval_s:
            return "save"
        return "eval"

    def evaluated(self, now):
        """An eval (scheduled or not) has just ended."""
        self.last_t = now

    def left(self, now=None, eval_s=0.0):
        """Scheduled evals still to come before the final one (as many as fit before the
        deadline at one per GAP + 1 evals' time)."""
        if self.interval is not None:
            return 0
        n = max(0, self.parts - 2 - self.done)
        if now is not None and eval_s > 0 and not math.isinf(self.deadline):
            n = min(n, max(0, int((self.deadline - now) / ((self.GAP + 1) * eval_s))))
        return n


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
    return _read_records(path, up_to_iter, ("train_loss", "val_loss"), "metrics file")


def read_log(path, up_to_iter):
    """The log-line records (iter, loss, lr, ...) of log.jsonl, as read_metrics reads evals."""
    return _read_records(path, up_to_iter, ("loss",), "log file")


def _read_records(path, up_to_iter, numbers, what):
    try:                                       # lines end at "\n" only: U+2028 may sit in a JSON string
        lines = [line.rstrip("\r") for line in read_regular_text(path, what).split("\n")]
    except (OSError, ValueError):
        return []
    records = []
    for line in filter(str.strip, lines):
        try:
            r = loads_json(line)
        except ValueError:
            continue
        if _is_record(r, numbers) and r["iter"] <= up_to_iter:
            records.append(r)
    return records


def _is_record(r, numbers):
    def number(v):                             # a loss: finite and 0 or more
        return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf
    return (isinstance(r, dict) and isinstance(r.get("iter"), int) and not isinstance(r["iter"], bool)
            and r["iter"] >= 0 and all(number(r.get(k)) for k in numbers))


def plot_losses(path, records, log=()):
    """loss.png: the train loss of every log line (the mean over its steps), and the train and
    val loss of every eval, against iterations (matplotlib's Agg canvas, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if log:
        ax.plot([r["iter"] for r in log], [r["loss"] for r in log], "-", color="tab:blue", alpha=0.35,
                lw=1, label="train (each log line)")
    its = [r["iter"] for r in records]
    ax.plot(its, [r["train_loss"] for r in records], "o-", color="tab:blue", label="train (eval)")
    ax.plot(its, [r["val_loss"] for r in records], "o-", color="tab:orange", label="val (eval)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    if any("exact_match" in r for r in records):      # a task run: its held-out accuracy too
        acc = [(r["iter"], 100 * r["exact_match"]) for r in records if "exact_match" in r]
        ax2 = ax.twinx()
        for key, color in (("value_match", "tab:purple"), ("rouge_l", "tab:red")):   # --task-metric
            points = [(r["iter"], 100 * r[key]) for r in records
                      if isinstance(r.get(key), (int, float)) and not isinstance(r[key], bool)]
            if points:           # large hollow rings under exact match, so an equal score hides neither
                ax2.plot(*zip(*points), "o--", color=color, markersize=10, markerfacecolor="none",
                         label=key.replace("_", " ") + " (held out)")
        ax2.plot(*zip(*acc), "^-", color="tab:green", markersize=5, label="exact match (held out)")
        ax2.set_ylim(-2, 102)
        ax2.set_ylabel("held-out score (%)")
    handles = [h for a in fig.axes for h in a.get_lines()]
    fig.legend(handles, [h.get_label() for h in handles], loc="lower center", ncol=3, fontsize=8)
    fig.subplots_adjust(bottom=0.26)     # the legend below the axes, never on the points
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return fig


def flops_and_peak(config, n_ranks=1):
    """A Utilization (training FLOPs per token, the matmul peak FLOP/s of n_ranks processes)
    from minigpt.flops, or None without it."""
    try:
        from .flops import flops_per_token, measure_matmul_peak
    except ImportError:
        return None
    return Utilization(flops_per_token(config), measure_matmul_peak() * 1e9 * n_ranks)
