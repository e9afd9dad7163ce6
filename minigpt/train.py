"""Train a GPT on any text file: `python -m minigpt.train shakespeare.txt`.

The loop reads top to bottom: batch, forward, backward, clip, step, log,
eval, checkpoint, sample. With a time budget (`--max-time`, on by default)
the number of iterations, and so the length of the cosine learning-rate
schedule, is fitted to the budget from the measured speed. Everything a run
needs to continue lives in `<out-dir>/ckpt.npz`; `--resume` picks it up.

Exit status: 0 done, 1 the loss became NaN or infinite, 2 bad input (one line on stderr),
130 interrupted by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP, 141 standard output closed (`| head`)
(each saves a checkpoint that --resume continues).
"""

if __name__ == "__main__" and not __package__:    # `python minigpt/train.py`: run it as a module
    import os, runpy, sys                           # noqa: E401 (before any relative import)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("minigpt.train", run_name="__main__", alter_sys=True)
    sys.exit(0)

import contextlib
import math
import os
import signal
import sys
import time

import numpy as np

from . import data, dist, plan, task, task_metrics
from .backend import DeviceError
from .checkpoint import CheckpointError
from .fileio import FileError, claim_dir
from .optim import clip_grad_norm, lr_schedule, relaid_lr
from .progress import EvalSchedule, TimeBudget, flops_and_peak, fmt_time, log_line, plot_losses, write_metrics
from .inputs import CACHE, check_inputs, start_afresh
from .run import PipeGuard, StopOnSignal, UsageError, handling, make_run, save
from .train_flags import check_args, check_start, parse_args


# ---------------------------------------------------------------------------- the run

class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


def train_step(run, lr):
    """One optimizer step over args.grad_accum micro-batches; returns the mean loss (0-d, on device)."""
    args, xp, model = run.args, run.xp, run.model
    grads, loss = None, 0.0
    for _ in range(args.grad_accum):
        x, y, share = _rows(run, data.get_batch(run.train_tokens, args.batch_size * run.comm.size,
                                                args.block_size, run.batch_rng))
        _, micro_loss, cache = model.forward(xp.asarray(x), xp.asarray(y), train=True, rng=run.dropout_rng)
        micro_loss = micro_loss * share
        g = model.backward(cache, dloss=share)
        if grads is None:
            grads = g
        else:
            for k in grads:
                grads[k] += g[k]
        loss = loss + micro_loss
    if args.grad_accum > 1:
        for k in grads:
            grads[k] *= 1.0 / args.grad_accum
    loss = run.comm.average(grads, loss / args.grad_accum)     # over ranks: one Allreduce
    clip_grad_norm(grads, args.grad_clip)
    run.opt.step(grads, lr=lr)
    run.it += 1
    return loss


def _rows(run, batch):
    """This rank's rows (x, y) of a global batch, and its share of the batch's mean loss.

    The share is 1 for text. For task examples, whose ignored targets (-1) differ from row to
    row, it is size * (this rank's counted targets) / (the batch's), so the mean over ranks
    of share * (this rank's mean loss) is the whole batch's mean, as on one process."""
    x, y = run.comm.shard(*batch)
    counted, total = np.count_nonzero(y != -1), np.count_nonzero(batch[1] != -1)
    return x, y, (run.comm.size * counted / total if total and counted != total / run.comm.size else 1.0)


def estimate_loss(run, tokens, n_batches=None):
    """Mean loss over args.eval_iters (or n_batches) fixed batches (the same ones at every
    eval; each rank takes its rows of every batch)."""
    args, rng = run.args, np.random.default_rng([run.args.seed, 7])
    n_batches = n_batches or args.eval_iters
    total = 0.0
    for _ in range(n_batches):
        x, y, share = _rows(run, data.get_batch(tokens, args.batch_size * run.comm.size, args.block_size, rng))
        _, loss, _ = run.model.forward(run.xp.asarray(x), run.xp.asarray(y), train=False)
        total = total + loss * share
    return float(run.comm.mean(total)) / n_batches


def sample_text(run, n_tokens, seed, stop=None):
    """n_tokens of text sampled after a newline (or after the first validation token); fewer
    if stop() becomes True (see sample.generate_tokens)."""
    from .sample import generate
    try:
        start = run.tokenizer.encode("\n")[-1:] or [int(run.val_tokens[0])]
    except (KeyError, ValueError):
        start = [int(run.val_tokens[0])]
    ids = generate(run.model, np.array([start]), n_tokens, temperature=0.8, top_k=200,
                   rng=np.random.default_rng(seed), vocab_size=run.tokenizer.vocab_size, stop=stop)
    return run.tokenizer.decode(ids[0, 1:].tolist())


START_SHARE = EvalSchedule.START_SHARE      # the eval before the first step: a tenth of the batches


def evaluate(run, lr, tok_per_s, budget, share=1.0):
    """Train and val loss, metrics.jsonl, loss.png, the checkpoint, and a short sample.

    share < 1 (the eval at step 0, where the loss is that of a random model): that share of
    the batches and held-out examples, no sample, and budget.eval_s is left to its estimate
    until a whole eval is timed."""
    t, a = time.perf_counter(), run.args
    batches = max(1, round(share * a.eval_iters))
    train_loss, val_loss = estimate_loss(run, run.train_tokens, batches), estimate_loss(run, run.val_tokens, batches)
    for loss in (train_loss, val_loss):
        if not math.isfinite(loss):
            raise Diverged(f"the eval loss is {loss} at iter {run.it}")
    run.best = min(run.best, val_loss)
    record, scored = {"iter": run.it, "train_loss": train_loss, "val_loss": val_loss, "lr": lr,
                      "elapsed_s": round(run.elapsed(), 2), "tokens_per_s": round(tok_per_s)}, None
    if batches != a.eval_iters:
        record["eval_iters"] = batches
    if isinstance(run.val_tokens, task.Examples):         # a task: score greedy answers too
        accuracy, scored = task.exact_match(run.model, run.val_tokens, max(1, round(share * a.eval_examples)),
                                            run.tokenizer)
        record.update(exact_match=accuracy, eval_examples=len(scored))
        record.update(task_metrics.scores(run.args.task_metric, scored))
    run.records.append(record)
    save(run)                                  # first: metrics.jsonl never runs ahead of it
    if run.comm.is_root:                       # rank 0 owns the files
        write_metrics(run.path("metrics.jsonl"), run.records)
        write_metrics(run.path("log.jsonl"), run.log)
        plot_losses(run.path("loss.png"), run.records, run.log)
    run.last_eval = run.it
    print(f"eval iter {run.it}: train {train_loss:.4f}, val {val_loss:.4f} (best {run.best:.4f}) "
          f"over {batches} batches"
          + (f"; exact match {100 * accuracy:.1f}% of {len(scored)} held out" if scored else "")
          + "".join(f", {k.replace('_', ' ')} {100 * v:.1f}%" for k, v in record.items() if k in task_metrics.KEYS)
          + f"; saved {run.path('ckpt.npz')}")
    n = min(run.args.sample_tokens, 100) if run.comm.is_root and share == 1 else 0
    if scored and n:
        print("\n".join("  | " + line for line in task.format_answers(scored, 3)))
    elif n:
        ts = time.perf_counter()
        print("  | " + sample_text(run, n, run.args.seed).replace("\n", "\n  | "))
        budget.sample_s_per_token = (time.perf_counter() - ts) / n
    if share == 1:                             # a part eval (step 0's) says little about a whole one
        budget.eval_s = time.perf_counter() - t
    if budget.schedule is not None:
        budget.schedule.evaluated(time.perf_counter())


def save_only(run, budget):
    """A scheduled eval the time cannot afford: the checkpoint and log.jsonl alone."""
    save(run)
    if run.comm.is_root:
        write_metrics(run.path("log.jsonl"), run.log)
    print(f"saved {run.path('ckpt.npz')} at iter {run.it} (no eval: at {budget.eval_seconds():.1f} s "
          f"each, evals keep to a twentieth of the time)")


WARMUP_STEPS = 5               # timed steps (after the first) that the time budget plans from


def _log_line(run, budget, total, lr, window_loss, window_n, dt, mfu):
    """Print one log line for the steps since the last; returns the tokens per second."""
    mean_loss = float(window_loss) / window_n                # the one host sync per log line
    if not math.isfinite(mean_loss):
        raise Diverged(f"the training loss is {mean_loss} at iter {run.it}")
    a, n = run.args, run.comm.size             # n ranks: n times the tokens (and the peak: mfu)
    line, tok_per_s = log_line(run.it, total, mean_loss, lr, dt, window_n,
                               a.batch_size * a.block_size * a.grad_accum * n, mfu,
                               budget.eta(run.it, total, time.perf_counter()))
    print(line, flush=True)
    run.log.append({"iter": run.it, "loss": mean_loss, "lr": lr, "ms_per_iter": round(1000 * dt / window_n, 2),
                    "elapsed_s": round(run.elapsed(), 2), "tokens_per_s": round(tok_per_s)})
    return tok_per_s


RELAY_CUT = 0.9                # a drop that would cut the lr by more than a tenth at once re-lays it


def _lr(run, total, timed):
    """(The learning rate of the next step, the warm-up in force) for a plan of `total` steps.
    A plan the budget cuts short has its warm-up cut to a fifth of it; a budgeted run resumed,
    or whose plan dropped steeply, follows the cosine re-laid from where its lr had got."""
    args = run.args
    decay_iters = args.lr_decay_iters or total
    fitted = timed and (args.max_iters is None or total < args.max_iters)     # by the budget
    warmup = min(args.warmup_iters, total // 5) if fitted else args.warmup_iters
    if timed and run.relay is not None:
        return relaid_lr(run.it, *run.relay, args.min_lr, decay_iters), warmup
    return lr_schedule(run.it, args.lr, args.min_lr, warmup, decay_iters), warmup


def train_loop(run, budget, stop):
    """Step, log, eval and checkpoint until the planned iterations or the time run out.

    With a deadline, the plan is made after a short warm-up (WARMUP_STEPS timed steps)
    and refitted smoothly at each log line (TimeBudget.refit); a plan the budget cuts short
    has its warm-up cut to a fifth of it, so the cosine reaches --min-lr at the planned end;
    a resumed run, and one whose plan dropped steeply (the lr would fall by more than a tenth
    at once), re-lays the cosine from the lr it had reached (run.relay), never above it.
    Evals follow budget.schedule (at the start and each tenth of the run to the 8th, or every
    --eval-interval steps) and end the run. Returns 128 + the signal number if stopped
    by SIGINT or SIGTERM (after saving), else 0."""
    args, schedule = run.args, budget.schedule
    mfu = flops_and_peak(run.model.config, run.comm.size)
    timed = not math.isinf(budget.deadline)
    lr, loss, tok_per_s, first_it, warm_t = args.lr, None, 0.0, run.it, None
    stop.armed = True                          # from here to exit, a signal stops the run with a save
    schedule.begin(run.it, time.perf_counter(), budget.deadline)
    if schedule.at_start() and run.last_eval != run.it:   # the curve starts at step 0
        evaluate(run, lr_schedule(run.it, args.lr, args.min_lr, args.warmup_iters, args.max_iters or 1),
                 tok_per_s, budget, share=START_SHARE)
    total = plan.planned_total(run, budget)    # every plan, refit, eval and stop: rank 0's (plan.decide)
    window_t, window_n, window_loss = time.perf_counter(), 0, 0.0
    # under MPI every rank must take the same branches: rank 0 decides the time, any rank a stop
    while run.it < total and not run.comm.any(stop.requested):
        if run.it > first_it and not plan.another_fits(run, budget):
            break                              # the time budget is spent
        lr, warmup = _lr(run, total, timed)
        loss = train_step(run, lr)
        run.lr_reached = lr if run.relay is not None or run.it > warmup else None
        window_loss, window_n = window_loss + loss, window_n + 1
        if timed and budget.s_iter is None:    # the warm-up that the first plan is made from
            if run.it - first_it == 1:
                float(loss)                    # wait for the device: the first step is not timed
                warm_t = time.perf_counter()
            elif run.it - first_it == 1 + WARMUP_STEPS:
                float(loss)
                budget.warm_up(WARMUP_STEPS, time.perf_counter() - warm_t)
                total = plan.planned_total(run, budget)
                print(f"plan: {total} iterations in the time budget "
                      f"({1000 * budget.s_iter:.1f} ms/iter over the first {WARMUP_STEPS + 1})", flush=True)
        if run.it % args.log_interval == 0 or run.it == total:
            dt = time.perf_counter() - window_t
            budget.observe(window_n, dt)
            if run.it < total:                 # refit the plan, but never past its end
                refit = max(run.it, plan.refitted_total(run, budget, total))
                if refit < total and run.it > warmup and not args.lr_decay_iters \
                        and _lr(run, refit, timed)[0] < RELAY_CUT * lr:
                    run.relay = (run.it, lr)   # a steep drop: the cosine re-laid from here to the end
                total = refit
            tok_per_s = _log_line(run, budget, total, lr, window_loss, window_n, dt, mfu)
            window_t, window_n, window_loss = time.perf_counter(), 0, 0.0
        due = plan.eval_due(run, budget, total)    # by --eval-interval, or the clock (plan.check_every)
        if due and not run.comm.any(stop.requested):
            t = time.perf_counter()
            if due == "eval":
                evaluate(run, lr, tok_per_s, budget)
            else:
                save_only(run, budget)
            window_t += time.perf_counter() - t        # the log window times training steps only
    stopped = run.comm.any(stop.requested)
    if window_n and not stopped:               # the budget ended the run between log lines
        tok_per_s = _log_line(run, budget, total, lr, window_loss, window_n,
                              time.perf_counter() - window_t, mfu)
        if run.it < total:
            print(f"stopped by the time budget at iter {run.it} of the planned {total}", flush=True)
    if stopped:
        if loss is not None and not math.isfinite(float(loss)):
            raise Diverged(f"the training loss is {float(loss)} at iter {run.it}")
        save(run)
        return _interrupted(run, stop)
    if run.last_eval != run.it:
        evaluate(run, lr, tok_per_s, budget)   # saves: a signal during it is honoured just after
    if run.comm.any(stop.requested):
        return _interrupted(run, stop, "during the final eval")
    return 0


def _interrupted(run, stop, when=None):
    """Say that the run stopped on a signal (its checkpoint saved); returns 128 + the signal."""
    name = signal.Signals(stop.signum or signal.SIGINT).name if stop.requested else "on another rank"
    print(f"interrupted at iter {run.it} ({name}{', ' + when if when else ''}): saved "
          f"{run.path('ckpt.npz')}; continue with --resume", file=sys.stderr)
    return 128 + (stop.signum or signal.SIGTERM)


def batch_line(args, comm):
    """'batch: 2 ranks x 6 sequences x 64 tokens = 768 tokens per step (...)' for the log."""
    n = comm.size * args.batch_size * args.grad_accum * args.block_size
    parts = [f"{comm.size} ranks"] * (comm.size > 1) + [f"{args.batch_size} sequences"] + \
        [f"{args.grad_accum} micro-batches"] * (args.grad_accum > 1) + [f"{args.block_size} tokens"]
    return f"batch: {' x '.join(parts)} = {n:,} tokens per step{comm.describe()}"


def _check_flags(args, explicit):
    """The flags alone, then every input they name, before the out-dir is touched."""
    check_start(args)
    if not args.resume:                        # a resumed run is checked with its saved flags
        check_args(args)
    check_inputs(args)


def shared_flags(args, explicit):
    """{flag: (value, given)} that every rank must agree on: all but FILE and --out-dir, whose
    contents (the text's SHA-256, the token cache) are compared instead."""
    return {k: (v, k in explicit) for k, v in vars(args).items() if k not in ("file", "out_dir")}


def train(args, explicit, t0):
    """Set up the run, train it, and report. Returns the exit status."""
    stop = StopOnSignal()
    signums = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    with contextlib.ExitStack() as held:
        held.enter_context(handling(stop, signums))    # from the start: a signal exits 128 + its number
        comm = dist.world()
        comm.agree(lambda: _check_flags(args, explicit))     # every rank, or none, refuses
        comm.check_same_flags(shared_flags(args, explicit))
        # rank 0 owns the out-dir, locked for the run; a refusal there stops every rank
        comm.agree(lambda: held.enter_context(claim_dir(args.out_dir, CACHE)) if comm.is_root else None)
        out = held.enter_context(contextlib.redirect_stdout(PipeGuard(sys.stdout, stop)))
        status = _train(args, explicit, t0, stop)
        return status or (128 + stop.signum if out.broken or stop.requested else 0)   # the end was not seen


def _train(args, explicit, t0, stop):
    run = dist.world().agree(lambda: make_run(args, explicit, t0, check_args))  # fails on all ranks or none
    run.comm.check_same_flags(shared_flags(args, explicit))     # again: --resume brought its own
    run.comm.check_same_data(run.tokenizer, run.text_sha256)
    if not (run.comm.weights_agree(run.model.params) and run.comm.same_everywhere(run.it)):
        raise dist.DistError("the ranks start from different weights or iterations (each read its own "
                             "checkpoint?): give an --out-dir (and --init-from) on a filesystem they share")
    if isinstance(run.val_tokens, task.Examples):     # every reference must be one the metric scores
        for part in (run.train_tokens, run.val_tokens):
            task_metrics.check_references(args.task_metric, part.completions, part.lines, args.file)
    cfg = run.model.config
    print(f"model: {run.model.num_params():,} parameters: {cfg.n_layer} layers, {cfg.n_head} heads, "
          f"{cfg.n_embd} wide, block {cfg.block_size}, on {run.model.device}")
    print(batch_line(args, run.comm))
    budget_s = args.max_time * 60 - (run.elapsed0 if args.resume and "max_time" not in explicit else 0)
    budget = TimeBudget(t0 + budget_s if args.max_time else math.inf, args.eval_interval,
                        args.eval_iters, args.grad_accum, args.sample_tokens,
                        schedule=EvalSchedule(args.eval_interval))
    if isinstance(run.val_tokens, task.Examples):     # keep time for the final eval's answers
        budget.margin_s += task.answer_time(run, args.eval_examples + 8)
    plan.check_budget_holds(run, budget, refuse=not (args.resume and "max_time" not in explicit))
    start_afresh(run)                          # everything checked: the last run's history goes
    with np.errstate(all="ignore"):            # a diverging loss is reported by the loop, once
        status = train_loop(run, budget, stop)
    if status:
        return status
    print(f"done: {run.it} iterations in {fmt_time(time.perf_counter() - t0)} of training (start-up and "
          f"evals included, the final sample not); best val loss "
          f"{run.best:.4f} (over {args.eval_iters} batches); checkpoint {run.path('ckpt.npz')}")
    if run.records and "exact_match" in run.records[-1]:
        r = run.records[-1]
        print(f"exact match on {r['eval_examples']} held-out examples: {100 * r['exact_match']:.1f}%"
              + "".join(f", {k.replace('_', ' ')} {100 * v:.1f}%" for k, v in r.items() if k in task_metrics.KEYS))
    if stop.requested:                         # the run is saved whole: no sample
        pass
    elif args.sample_tokens and run.comm.is_root and isinstance(run.val_tokens, task.Examples):
        accuracy, scored = task.exact_match(run.model, run.val_tokens, 8, run.tokenizer)
        print("--- greedy answers to 8 held-out prompts ---\n" + "\n".join(task.format_answers(scored, 8)))
    elif args.sample_tokens and run.comm.is_root:
        print(f"--- sample ({args.sample_tokens} tokens) ---")
        print(sample_text(run, args.sample_tokens, args.seed + 1, stop=lambda: stop.requested))
    if stop.requested:                         # a signal (or a closed stdout) after the final save
        print(f"interrupted ({signal.Signals(stop.signum).name}) after the final save: "
              f"{run.path('ckpt.npz')} holds the whole run", file=sys.stderr)
        return 128 + stop.signum
    return 0


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    t0, started_ns = time.perf_counter(), time.time_ns()   # a ckpt.npz older than this is not this run's
    try:
        args, explicit = parse_args(argv)
    except SystemExit as e:                    # --help, or a malformed flag (one line, status 2)
        return e.code
    try:
        return train(args, explicit, t0)
    except (UsageError, data.DataError, CheckpointError, DeviceError, FileError, dist.DistError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except OSError as e:                       # the disk, not the flags: e.g. a file vanished
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except Diverged as e:
        ckpt = os.path.join(args.out_dir, "ckpt.npz")
        mine = os.path.exists(ckpt) and (args.resume or os.stat(ckpt).st_mtime_ns >= started_ns)
        kept = f"the last good checkpoint is {ckpt}" if mine else "this run saved no checkpoint"
        print(f"error: {e}; stopped ({kept}); try a lower --lr", file=sys.stderr)
        return 1
    except MemoryError:
        print("error: out of memory for this model and batch: try a smaller --block-size, "
              "--batch-size, --n-embd or --n-layer", file=sys.stderr)
        return 2
    except dist.RanksDiverged as e:            # rank 0's state is saved; --resume continues
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:             # before training started, or a second signal
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"interrupted ({signal.Signals(signum).name}): stopped at once (before training, or a "
              f"second signal); the last checkpoint, if any, is kept", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(dist.run(main))                   # under mpiexec: rank 0 speaks, all ranks end together
