"""The time budget's arithmetic, metrics.jsonl and loss.png."""
import math

import pytest

from minigpt.progress import TimeBudget, fmt_time, plot_losses, read_metrics, write_metrics


def _budget(deadline=100.0, **kw):
    args = dict(eval_interval=10, eval_iters=30, grad_accum=1, sample_tokens=100, margin_s=3.0)
    args.update(kw)
    return TimeBudget(deadline, **args)


def test_before_any_measurement_the_plan_is_only_the_iteration_cap():
    b = _budget()
    assert b.plan(0, 0.0, max_iters=500) == 500 and b.plan(0, 0.0) == math.inf
    assert b.eta(0, 500) is None and b.fits_another(0.0)


def test_plan_fills_the_time_left_after_the_reserve_with_evals_spread_over_it():
    b = _budget()
    b.observe(10, 1.0)                         # 0.1 s per step
    b.eval_s, b.sample_s_per_token = 2.0, 0.01
    assert b.reserve() == 2.0 + 100 * 0.01 + 3.0
    per_iter = 0.1 + 2.0 / 10
    assert b.per_iter() == per_iter
    assert b.plan(10, now=40.0) == 10 + int((100.0 - 40.0 - 6.0) / per_iter)
    assert b.plan(10, now=40.0, max_iters=50) == 50
    assert b.plan(10, now=99.0) == 10          # out of time: no more steps


def test_unmeasured_eval_is_estimated_as_forward_passes_over_both_splits():
    b = _budget(eval_iters=30, grad_accum=2)
    b.observe(4, 1.2)                          # 0.3 s per step of 2 micro-batches
    assert math.isclose(b.eval_seconds(), 2 * 30 * 0.3 / (3 * 2))


def test_fits_another_stops_one_step_before_the_reserve_is_touched():
    b = _budget(deadline=50.0)
    b.observe(1, 1.0)
    b.eval_s, b.sample_s_per_token = 1.0, 0.0
    assert b.fits_another(50.0 - 1.0 - 4.0)
    assert not b.fits_another(50.0 - 1.0 - 4.0 + 0.01)


def test_no_deadline_means_no_time_limit():
    b = _budget(deadline=math.inf)
    b.observe(10, 1.0)
    assert b.plan(10, 1e9, max_iters=70) == 70 and b.fits_another(1e12)


def test_fmt_time():
    assert fmt_time(125.7) == "2m05s" and fmt_time(None) == "?" and fmt_time(-3) == "0m00s"


def test_metrics_round_trip_and_resume_drops_records_past_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"iter": i, "train_loss": 2.0 / i, "val_loss": 2.1 / i} for i in (5, 10, 15)]
    write_metrics(path, records)
    assert read_metrics(path, 15) == records
    assert read_metrics(path, 12) == records[:2]
    assert read_metrics(tmp_path / "missing.jsonl", 10) == []


def test_loss_plot_is_a_png_written_without_a_display(tmp_path):
    path = tmp_path / "loss.png"
    plot_losses(path, [{"iter": 5, "train_loss": 3.0, "val_loss": 3.1},
                       {"iter": 10, "train_loss": 2.0, "val_loss": 2.2}])
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]


def test_a_warm_up_measurement_plans_before_the_first_log_window_which_then_takes_over():
    b = _budget()
    assert b.plan(6, 0.0) == math.inf
    b.warm_up(5, 0.5)                          # 0.1 s per step over a short warm-up
    assert b.s_iter == 0.1 and b.plan(6, 0.0) == 6 + int((100.0 - b.reserve()) / b.per_iter())
    b.observe(50, 10.0)                        # the first log window: 0.2 s per step
    assert b.s_iter == 0.2


def test_log_line_names_the_iteration_loss_speed_and_eta():
    from minigpt.progress import log_line
    line, tok_per_s = log_line(40, 100, 2.5, 1e-3, 2.0, 20, 768, eta=65)
    assert tok_per_s == 768 * 20 / 2.0
    assert line == "iter    40/100 | loss 2.5000 | lr 1.00e-03 | 100.0 ms/iter | 7,680 tok/s | ETA 1m05s"


def test_mfu_never_passes_100_percent_when_the_start_up_peak_was_measured_low():
    from minigpt.progress import Utilization, log_line
    mfu = Utilization(flops_per_token=1e6, peak=1e9)          # a low start-up reading: 1 GFLOP/s
    line, _ = log_line(1, 10, 2.0, 1e-3, 1.0, 1, 3000, mfu)    # achieves 3 GFLOP/s
    assert line.endswith("MFU 100.0% | ETA --") or "MFU 100.0%" in line
    line, _ = log_line(2, 10, 2.0, 1e-3, 1.0, 1, 1500, mfu)    # half as fast, against the raised peak
    assert "MFU 50.0%" in line
    assert Utilization(1e6, 1e10).percent(2000) == 20.0        # an honest peak is left alone


def test_schedule_evaluates_at_each_tenth_of_the_time_or_of_the_plan_whichever_is_further():
    from minigpt.progress import EvalSchedule
    s = EvalSchedule()
    s.begin(it=0, now=0.0, deadline=100.0)
    assert s.at_start() and s.left() == 8
    assert not s.due(50, 5.0, 1000, eval_s=0.1)          # 5% of the time, 5% of the plan
    assert s.due(60, 10.0, 1000, eval_s=0.1) == "eval"   # a tenth of the time
    assert not s.due(80, 12.0, 1000, eval_s=0.1)         # the same tenth: once
    assert s.due(210, 12.0, 1000, eval_s=0.1) and s.done == 2     # a slow clock: by the plan
    assert s.due(220, 45.0, 1000, eval_s=0.1) and s.done == 4     # a slow machine: by the clock
    assert s.left() == 4 and not s.due(950, 91.0, 1000, eval_s=0.1)     # the end's eval is near
    untimed = EvalSchedule()
    untimed.begin(it=100, now=0.0, deadline=math.inf)     # resumed at 100, no deadline: by iterations
    assert [it for it in range(100, 201, 5) if untimed.due(it, 1e6, 200, eval_s=50.0)] == list(range(110, 190, 10))


def test_schedule_keeps_evals_to_a_tenth_of_the_time_on_a_short_budget():
    from minigpt.progress import EvalSchedule
    s = EvalSchedule()
    s.begin(it=0, now=0.0, deadline=60.0)
    s.evaluated(2.0)                                     # the start's eval took 2 s
    assert s.due(100, 18.0, 1000, eval_s=2.0) == "save"  # 3/10 of the time, but 16 s < 19 evals
    assert s.due(110, 19.0, 1000, eval_s=2.0) is None    # the same tenth: once
    assert s.due(200, 40.0, 1000, eval_s=2.0) == "eval"
    s.evaluated(42.0)
    assert s.left(now=42.0, eval_s=2.0) == 0             # 18 s left: no room for another
    assert s.left(now=0.0, eval_s=2.0) == 1              # 60 s: room for one in 20 evals' time
    assert EvalSchedule(interval=5).left() == 0 and EvalSchedule(interval=5).due_by_iter(10)
    assert not EvalSchedule(interval=5).at_start()


def test_plan_keeps_time_for_the_scheduled_evals_still_to_come():
    from minigpt.progress import EvalSchedule
    s = EvalSchedule()
    s.begin(0, 0.0, 1000.0)
    b = TimeBudget(1000.0, None, 30, 1, 0, margin_s=0.0, schedule=s)   # 8 evals to come
    b.observe(10, 1.0)
    b.eval_s = 2.0
    assert b.plan(10, 0.0) == 10 + int((1000.0 - 2.0 - 8 * 2.0) / 0.1)


def test_a_refit_moves_a_quarter_of_the_way_up_all_the_way_down_never_below_the_iterations_done():
    b = _budget(deadline=100.0, eval_interval=10 ** 9)
    b.observe(10, 1.0)                                   # 0.1 s per step
    b.eval_s, b.sample_s_per_token, b.margin_s = 0.0, 0.0, 0.0
    fit = b.plan(10, 40.0)
    assert fit == 10 + 600
    assert b.refit(410, 10, 40.0) == 410 + round(0.25 * (fit - 410))     # more fits: smoothly
    assert b.refit(1010, 10, 40.0) == fit                # less fits: at once, before the deadline
    assert b.refit(math.inf, 10, 40.0) == fit            # the first plan is taken whole
    assert b.refit(20, 500, 99.9) == 500 and b.refit(300, 10, 40.0, max_iters=350) == 300 + round(0.25 * 50)
    assert b.refit(410, 10, 40.0, interval=100) == 410 + round(0.25 * (fit - 410))   # 6 lines left
    assert b.refit(410, 10, 40.0, interval=300) == 410 + round(0.5 * (fit - 410))    # 2 lines left
    assert b.refit(410, 10, 40.0, interval=1000) == fit                              # the last one


def test_loss_plot_draws_the_log_line_train_loss_when_given(tmp_path):
    fig = plot_losses(tmp_path / "loss.png", [{"iter": 10, "train_loss": 2.0, "val_loss": 2.2}],
                      [{"iter": i, "loss": 4.0 / i} for i in (1, 2, 5, 10)])
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["train (each log line)", "train (eval)", "val (eval)"]
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [1, 2, 5, 10]


def test_loss_plot_of_a_task_keeps_equal_scores_visible_and_the_legend_off_the_points(tmp_path):
    records = [{"iter": i, "train_loss": 2.0, "val_loss": 2.2, "exact_match": 0.5, "value_match": 0.5}
               for i in (0, 10)]
    fig = plot_losses(tmp_path / "loss.png", records)
    assert all(a.get_legend() is None for a in fig.axes) and len(fig.legends) == 1   # below the axes
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[-2:] == ["value match (held out)", "exact match (held out)"]
    value, exact = fig.axes[1].get_lines()
    assert value.get_markerfacecolor() == "none" and value.get_markersize() > exact.get_markersize()


def test_warm_up_estimates_the_eval_from_its_timed_batch_not_from_the_step():
    """Before a step is measured, the eval is the start-up timing of its batch (2 splits of
    --eval-iters batches), not 2/3 of eval_iters steps: a 1-minute fine-tune must not stop at
    its first step because a slow step made the eval look 67 steps long."""
    b = TimeBudget(10.0, None, 100, 1, 400)
    b.guess_s_iter, b.guess_eval_s = 0.1, 1.0         # the formula would give 6.7 s for the eval
    assert b.eval_seconds() == 1.0 and b.fits_another(0.0)
    b.warm_up(5, 1.0)                                  # measured: twice the start's step
    assert b.eval_seconds() == pytest.approx(2.0)     # so the eval is taken twice as long too
