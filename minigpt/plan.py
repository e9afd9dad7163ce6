"""The time budget's decisions, made once for every rank, and the check that it can hold.

    total = planned_total(run, budget)        # how many iterations fit (rank 0's plan, on every rank)
    total = refitted_total(run, budget, total) # at a log line: the plan moved smoothly (rank 0's)
    due = eval_due(run, budget, total)         # "eval", "save" or None: the eval schedule (rank 0's)
    if not another_fits(run, budget): ...      # stop now? (rank 0 decides)
    check_budget_holds(run, budget)           # at the start: one step and the final eval must fit

Under MPI each rank measures its own speed, and a busy machine makes those
measurements differ. A plan made from them on each rank would give each its own
number of iterations, its own cosine schedule and its own last step: the weights
drift apart and the ranks stop at different steps. So every plan, refit, eval and
stop goes through `decide`, which runs the decision on rank 0 alone and hands its
result to every rank (one broadcast); one process decides for itself. The state
these decisions keep (the EvalSchedule's tenths done and last eval's time) is
therefore rank 0's alone: no other rank reads it.
"""
import math
import time

import numpy as np

from . import data, task
from .backend import default_rng
from .inputs import UsageError


def decide(run, fn):
    """fn() as rank 0 computes it, on every rank (see dist.Solo.decide)."""
    return run.comm.decide(fn)


def planned_total(run, budget):
    """The total number of iterations that fit in the budget, capped by --max-iters."""
    return decide(run, lambda: budget.plan(run.it, time.perf_counter(), run.args.max_iters))


def refitted_total(run, budget, total):
    """The plan at a log line (TimeBudget.refit: down at once, up a quarter of the way)."""
    return decide(run, lambda: budget.refit(total, run.it, time.perf_counter(), run.args.max_iters,
                                            run.args.log_interval))


CHECKS_PER_PART = 5            # the eval schedule looks at the clock about 5 times a tenth


def check_every(total, log_interval, parts=10):
    """Steps between looks at the eval schedule: at log lines, or more often when the plan is
    short (a busy machine), about CHECKS_PER_PART times per tenth of it; from the plan's total,
    so the same on every rank."""
    if math.isinf(total):
        return log_interval
    return max(1, min(log_interval, int(total) // (parts * CHECKS_PER_PART)))


def eval_due(run, budget, total):
    """What the eval schedule asks for after this step: "eval", "save" or None. A given
    --eval-interval is the same on every rank and needs no broadcast; the time-based schedule
    reads the clock, every check_every steps (one broadcast each)."""
    schedule = budget.schedule
    if schedule.due_by_iter(run.it):
        return "eval"
    if schedule.interval is not None or run.it % check_every(total, run.args.log_interval, schedule.parts):
        return None
    return decide(run, lambda: schedule.due(run.it, time.perf_counter(), total, budget.eval_seconds()))


def another_fits(run, budget):
    """True while one more iteration still leaves time for the end of the run."""
    return decide(run, lambda: budget.fits_another(time.perf_counter()))


PROBE_TRIES = 3                # timings of each kind at the start; the fastest is the estimate


def _fastest(fn, tries):
    """Seconds of fn()'s fastest call of `tries`, after one untimed call (which allocates).
    The fastest, not the last: on a busy machine one call can be caught by the scheduler and
    take several times longer, and a budget refused on such a sample is refused for nothing."""
    fn()
    best = math.inf
    for _ in range(tries):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _probe(run, tries=PROBE_TRIES):
    """Seconds of one training micro-batch (forward and backward) and of one eval batch
    (forward), each the fastest of `tries` timings, the eval batch never above the micro-batch
    (a forward pass is part of one). The model, the optimizer and the run's random streams are
    left untouched, so a resumed run continues exactly."""
    args, xp, model = run.args, run.xp, run.model
    rng, dropout = np.random.default_rng([args.seed, 11]), default_rng(xp, args.seed + 11)
    x, y = run.comm.shard(*data.get_batch(run.train_tokens, args.batch_size * run.comm.size,
                                           args.block_size, rng))
    x, y = xp.asarray(x), xp.asarray(y)

    def micro():
        _, loss, cache = model.forward(x, y, train=True, rng=dropout)
        model.backward(cache)
        float(loss)

    micro_s = _fastest(micro, tries)
    eval_batch_s = _fastest(lambda: float(model.forward(x, y, train=False)[1]), tries)
    return micro_s, min(eval_batch_s, micro_s)


SAMPLE_PROBE_TOKENS = 32       # tokens sampled at the start to time the final sample's per-token cost


def _sample_probe(run, tries=2):
    """Seconds per sampled token (the fastest of `tries` short samples), or None without a final
    sample. Its own generator: the run's random streams are untouched."""
    n = min(run.args.sample_tokens, SAMPLE_PROBE_TOKENS)
    if not n or task.is_task_file(run.args.file):
        return None
    from .sample import generate
    start = np.zeros((1, 1), dtype=np.int64)
    return _fastest(lambda: generate(run.model, start, n, rng=np.random.default_rng(0),
                                     vocab_size=run.tokenizer.vocab_size), tries) / n


def budget_verdict(args, budget, micro_s, eval_batch_s, now):
    """None if one optimizer step and the final eval (and, on the eval schedule, the start's
    tenth of one) fit before the deadline, else the reason. The timings are the fastest seen,
    so a refusal means the budget cannot hold even then."""
    step_s = args.grad_accum * micro_s
    evals = 1 + (budget.schedule.START_SHARE if budget.schedule and budget.schedule.at_start() else 0)
    eval_s = 2 * args.eval_iters * eval_batch_s * evals       # the final eval (and the one at the start)
    left = budget.deadline - now - budget.margin_s
    if step_s + eval_s <= left:
        return None
    minutes = args.max_time
    if left <= 0:
        return (f"the time budget cannot hold: start-up alone (reading the data, building the model) "
                f"used all of --max-time {minutes:g}: raise --max-time")
    return (f"the time budget cannot hold: one step of --grad-accum {args.grad_accum} micro-batches "
            f"takes about {step_s:.1f} s and the final eval of --eval-iters {args.eval_iters} batches "
            f"per split about {eval_s:.1f} s (measured now), more than the {left:.1f} s left of "
            f"--max-time {minutes:g}: lower --grad-accum or --eval-iters, or raise --max-time")


def check_budget_holds(run, budget, refuse=True):
    """UsageError, on every rank, if the first step and the final eval cannot fit in the
    budget (rank 0's timing decides); either way the budget knows a step's cost from the
    start (and an eval's, from its batch), so the warm-up never runs past the deadline.
    refuse=False (a resumed run on what is left of its own budget) only sets those costs: the
    run then ends as soon as it can."""
    if budget.deadline == float("inf"):
        return
    micro_s, eval_batch_s = _probe(run)
    token_s = _sample_probe(run)

    def verdict():
        why = budget_verdict(run.args, budget, micro_s, eval_batch_s, time.perf_counter())
        return why, run.args.grad_accum * micro_s, 2 * run.args.eval_iters * eval_batch_s, token_s

    why, step_s, eval_s, token_s = decide(run, verdict)
    if why and refuse:
        raise UsageError(why)
    budget.guess_s_iter, budget.guess_eval_s = step_s, eval_s
    if token_s is not None:                    # the final sample's time, reserved from a measurement
        budget.sample_s_per_token = token_s
