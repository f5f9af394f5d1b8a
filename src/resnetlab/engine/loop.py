"""The training loop: :func:`fit`, :func:`train_epoch` and :func:`evaluate`.

Device and precision are decided once (:func:`~resnetlab.engine.runtime.prepare_runtime`); the
step has one autocast context and one ``GradScaler(enabled=...)`` (enabled only for fp16 on
CUDA) and no branches on precision.  The loop reads values back from the device only at its
sync points (every ``log_every`` steps, at checkpoints and at epoch ends), so a GPU is never
left idle waiting for the host.  An epoch ends in one order: evaluate, track, save, log.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.engine import checkpointing, distributed
from resnetlab.engine.clock import Clock
from resnetlab.engine.config import RunConfig, validate
from resnetlab.engine.metrics import EvalResult
from resnetlab.engine.plan import RunPlan, make_plan
from resnetlab.engine.replan import (
    DEADLINE_SETTLE,
    deadline_stop,
    deadline_window,
    planned_end,
    reaim,
    recheck,
)
from resnetlab.engine.runtime import (
    Runtime,
    global_flags,
    prepare_runtime,
    restore_flags,
    to_device,
)
from resnetlab.engine.schedules import resize_batch
from resnetlab.engine.session import TrainSession, epoch_batches, open_session, steps_per_epoch
from resnetlab.engine.task import Classification, Task, evaluate_batch
from resnetlab.engine.tracker import pick_metric
from resnetlab.layers.fold import fold_bn
from resnetlab.utils.device import autocast
from resnetlab.utils.errors import ConfigError

__all__ = ["fit", "train_epoch", "train_batch", "evaluate", "FitResult", "Runtime", "prepare_runtime",
           "epoch_batches", "steps_per_epoch", "pick_metric", "open_session"]


@dataclass
class FitResult:
    """What :func:`fit` did.  ``history`` holds the ``metrics.csv`` rows as dicts."""

    best_metric: float | None
    best_epoch: float | None
    epochs_run: float
    steps: int
    history: list[dict[str, Any]]
    stopped_early: bool
    run_dir: Path
    metric: str = "val_top1"
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, device: torch.device | str,
             dtype: torch.dtype = torch.float32, num_classes: int | None = None,
             tta: Callable[[torch.Tensor], Iterable[torch.Tensor]] | None = None,
             label_smoothing: float = 0.0, channels_last: bool = False,
             task: Task | None = None, fold_bn: bool = False) -> EvalResult:
    """Loss, top-1/top-5, per-class accuracy and confusion matrix of ``model`` on ``loader``.

    ``task`` (default: a :class:`Classification` of ``num_classes``) says what the metrics are:
    a :class:`Regression` has standardised float targets, the MSE as its loss, and ``rmse`` (in
    target units) and ``r2`` instead of accuracy.

    With ``tta`` (e.g. ``resnetlab.data.flip_tta``) the softmax probabilities of the views it
    yields are averaged and the loss is the cross-entropy of that average.  Under torchrun each
    rank evaluates every ``world_size``-th batch and the sums are all-reduced.

    ``fold_bn`` evaluates an eval-mode copy with each BatchNorm folded into the convolution
    before it (:func:`resnetlab.layers.fold.fold_bn`): the same outputs to float rounding, and
    1.1-1.4x faster on 2-core CPUs (ResNet-20/56, fp32, batch 256; ``benchmarks/README.md``).
    ``model`` itself, its hooks included, is not used then.
    """
    task = task or Classification(num_classes or 2)
    rt = Runtime(torch.device(device), dtype, channels_last, distributed.dist_info())
    was_training = model.training
    model.eval()
    meter = task.meter(rt.device)
    rank, world = rt.dist.rank, rt.dist.world_size
    if world > 1 and getattr(loader, "strided", False):  # read only this rank's batches
        batches = iter(loader.epoch(0, start=min(rank, len(loader)), every=world))
    else:
        batches = itertools.islice(iter(loader), rank, None, world)
    net = None
    for x, y in batches:
        x, y = to_device(x, rt), y.to(rt.device, non_blocking=True)
        if net is None:  # folding traces the data flow on one real input
            net = folded_for_eval(model, x[:1]) if fold_bn else model
        evaluate_batch(task, net, x, y, meter, rt, tta, label_smoothing)
    meter.all_reduce()
    model.train(was_training)
    return meter.result()


def folded_for_eval(model: nn.Module, sample: torch.Tensor) -> nn.Module:
    """``model`` with its conv -> BatchNorm pairs folded (a copy), or ``model`` itself when
    there is nothing to fold or it is compiled (a folded copy would compile again, for
    longer than it saves)."""
    if hasattr(model, "_orig_mod") or not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    return fold_bn(model, sample)  # a deep copy: the weights keep their memory format


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None,
        plan: RunPlan | RunConfig, run_dir: str | Path, *, num_classes: int,
        extra_meta: dict[str, Any] | None = None, resume: bool = False, tta: Callable | None = None,
        progress: bool | None = None, on_epoch_end: Callable[[dict[str, Any]], Any] | None = None,
        task: Task | None = None, lr_scales: dict[str, float] | None = None) -> FitResult:
    """Train ``model`` on ``train_loader`` as ``plan`` says, writing the run into ``run_dir``.

    Moves the model to the resolved device (channels_last, optional ``torch.compile``, DDP
    under torchrun), writes ``config.yaml``, ``metrics.csv``/``steps.csv`` (+ ``.jsonl``),
    ``checkpoints/last`` (every ``checkpoint_every`` steps and each epoch) and
    ``checkpoints/best`` (by ``train.early_stop_metric``; EMA weights when ``ema_decay`` is
    set).  ``extra_meta`` (JSON-able: model build arguments, data meta, classes) goes into every
    checkpoint.  ``resume=True`` continues from ``run_dir/checkpoints/last`` exactly, including
    the position inside the epoch.  ``tta`` is used for the validation evaluations;
    ``on_epoch_end(row)`` is called after each epoch and stops training by returning True.
    Raises :class:`TrainingDiverged` after ``max_nonfinite_steps`` non-finite losses in a row.

    ``plan``: a :class:`~resnetlab.engine.plan.RunPlan` (what the run API makes, checked once;
    nothing here checks it again), or a :class:`RunConfig`, which is checked and planned here,
    with ``task`` (default: a :class:`Classification` of ``num_classes``: the loss and the
    metrics; a :class:`Regression` logs RMSE in target units and R^2 and keeps the best
    checkpoint by ``val_rmse``) and ``lr_scales`` (``{parameter name: scale}``, a fine-tune's).
    """
    if isinstance(plan, RunConfig):
        plan = _plan_config(plan, model, train_loader, val_loader, num_classes, task, lr_scales)
    elif task is not None or lr_scales is not None:
        raise TypeError("fit(): task and lr_scales belong to the plan (make_plan(..., task=, lr_scales=))")
    flags = global_flags()
    try:
        s = open_session(model, train_loader, val_loader, plan, Path(run_dir),
                         num_classes=num_classes, progress=progress,
                         extra_meta=dict(extra_meta or {}), tta=tta, on_epoch_end=on_epoch_end)
        _start(s, resume)
        try:
            while not s.state.finished:
                train_epoch(s)
        finally:
            s.freeze_late(False)  # the model trains as a whole again in the caller's hands
            s.display.close()
            s.writer.close()
            s.guard.close()
        distributed.barrier()
        return _result(s)
    finally:
        restore_flags(flags)


def _plan_config(cfg: RunConfig, model: nn.Module, train_loader: Iterable,
                 val_loader: Iterable | None, num_classes: int, task: Task | None,
                 lr_scales: dict[str, float] | None) -> RunPlan:
    """The edge for callers of the engine itself: check ``cfg``, then plan it on this data."""
    validate(cfg)
    return make_plan(cfg, train_loader, task=task or Classification(num_classes),
                     has_val=val_loader is not None, model=model,
                     world_size=distributed.dist_info().world_size, lr_scales=lr_scales)


def _start(s: TrainSession, resume: bool) -> None:
    """Continue from ``last`` (resume) or start fresh; write ``config.yaml``; start the clock."""
    if resume:
        st = checkpointing.restore(s)
        st.finished = st.stopped_early or st.epoch >= s.cfg.train.epochs or st.step >= s.total_steps
        s.state = st
        s.guard.reset(st.nonfinite_steps)
        s.writer.truncate_after(st.step)
        s.writer.add_missing(st.history)
        s.display.message(f"resuming {s.run_dir} at epoch {st.epoch + 1}, batch {st.batch}, "
                          f"step {st.step}")
    elif s.main:
        s.run_dir.mkdir(parents=True, exist_ok=True)
    if s.main:
        s.cfg.to_yaml(s.run_dir / "config.yaml")
    s.guard.take_snapshot()
    s.clock = Clock(s.state.elapsed_s, s.state.epoch_time_s)


def train_epoch(s: TrainSession) -> dict[str, Any]:
    """Train the rest of the current epoch (from ``s.state.batch``), then end it; returns the
    epoch's ``metrics.csv`` row.  Stops early at ``total_steps``."""
    st = s.state
    s.net.train()
    s.display.set_position(st.epoch, st.step)
    batches = epoch_batches(s.train_loader, st.epoch, st.batch, s.steps_per_epoch,
                            s.rt.dist.rank, s.rt.dist.world_size)
    s.deadline_mark = None  # the validation before this epoch is not a training step
    for x, y in batches:
        s.freeze_late(s.late_frozen(st.step))
        train_batch(s, x, y, s.input_size(st.step))
        st.batch += 1
        st.step += 1
        if s.plan.budget_check is not None:
            _check_budget(s)
        elif s.plan.deadline is not None:
            _watch_deadline(s)
        s.display.advance()
        if st.step % s.cfg.train.log_every == 0:
            _log_window(s)
        if st.step >= s.total_steps:
            break
        if _mid_epoch_checkpoint_due(s):
            _save_mid_epoch(s)
    if st.batch < s.steps_per_epoch and st.step < s.total_steps:
        raise ConfigError(f"the training loader gave {st.batch} batches in epoch {st.epoch + 1} "
                          f"but its len() is {s.steps_per_epoch}; make len() match the batches")
    return end_epoch(s)


def _check_budget(s: TrainSession) -> None:
    """A time-budgeted run times its own steps ``from_step`` .. ``at_step`` and fixes its
    length again from them (:func:`resnetlab.engine.replan.recheck`), before any step whose
    learning rate or input size depends on the length."""
    check, step = s.plan.budget_check, s.state.step
    if step == check.from_step:
        _drain(s)  # a host sync: the steps so far have finished
        s.budget_mark = time.perf_counter()
    elif step == check.at_step and s.budget_mark is not None:
        _drain(s)
        now = time.perf_counter()
        step_s = (now - s.budget_mark) / (check.at_step - check.from_step)
        steps = int(distributed.broadcast_object(recheck(s.plan, step_s, now)))
        before = s.plan.schedule_steps
        s.adopt(s.plan.with_steps(steps))
        if s.main:
            s.cfg.to_yaml(s.run_dir / "config.yaml")
            s.display.notice(f"time budget, re-planned from this run's steps "
                             f"{check.from_step}-{check.at_step} ({1000 * step_s:.0f} ms each): "
                             f"{before} -> {steps} steps ({steps / s.steps_per_epoch:.1f} epochs)")


def _watch_deadline(s: TrainSession) -> None:
    """A time-budgeted run looks at its deadline every :func:`~resnetlab.engine.replan.
    deadline_window` steps and, when the machine has slowed so far that the run would end
    past its budget, stops it early (:func:`resnetlab.engine.replan.deadline_stop`; back to
    the planned end if it speeds up again before that).  The rate is that of every step of
    this epoch and phase (size, freeze) since its first ``DEADLINE_SETTLE``: one window's
    rate swung 105-119 ms on a quiet 2-core CPU, and projected over the rest of a run it
    stopped and resumed runs dozens of times (benchmarks/README.md, issue 25)."""
    step, phase = s.state.step, s.phase(s.state.step - 1)
    mark = s.deadline_mark
    if mark is None or mark[2] != phase:  # a new epoch, size or freeze: let its first steps pass
        s.deadline_mark = (step + DEADLINE_SETTLE, None, phase)
    elif mark[1] is None:
        if step >= mark[0]:
            _drain(s)
            s.deadline_mark = (step, time.perf_counter(), phase)
    elif step > mark[0] and (step - mark[0]) % deadline_window(s.plan) == 0:
        _drain(s)
        now = time.perf_counter()
        step_s = (now - mark[1]) / (step - mark[0])
        end = distributed.broadcast_object(reaim(s.plan, phase, step_s, now, step, step - mark[0]))
        if end is not None:
            _move_end(s, step, end, (mark[0], step_s), phase)
            return
        stop = int(distributed.broadcast_object(deadline_stop(s.plan, phase, step_s, now, step)))
        if stop != s.total_steps:
            _stop_at(s, stop, step_s, phase[0])


def _move_end(s: TrainSession, step: int, end: int, timed: tuple[int, float],
              phase: tuple[int | None, bool]) -> None:
    """Train to ``end`` from here, the rest of the schedule stretched or squeezed to end
    there (``train.budget_end`` in ``config.yaml``, so that a rerun of it trains the same
    steps), and say so: :func:`resnetlab.engine.replan.reaim`'s decision."""
    before = s.plan.end_step
    s.adopt(s.plan.with_end(step, end))
    if s.main:
        s.cfg.to_yaml(s.run_dir / "config.yaml")
        size, frozen = phase
        what = f" at {size} px" if size else ""
        what += " frozen" if frozen else ""
        s.display.notice(f"time budget, re-aimed from this run's steps {timed[0]}-{step}{what} "
                         f"({1000 * timed[1]:.0f} ms each): {before} -> {end} steps "
                         f"({end / s.steps_per_epoch:.1f} epochs), the learning rate decaying to "
                         "its end there")


def _stop_at(s: TrainSession, stop: int, step_s: float, size: int | None) -> None:
    """Train to ``stop`` from here (saved in ``config.yaml`` as ``train.budget_stop``, so
    that a rerun of it stops there too), and say why."""
    end, planned = s.plan.end_step, planned_end(s.plan)
    was_stopping = s.cfg.train.budget_stop is not None
    s.adopt(s.plan.with_stop(stop if stop < planned else None))
    if s.main:
        s.cfg.to_yaml(s.run_dir / "config.yaml")
        at = f" at {size} px" if size else ""
        if (stop < planned) == was_stopping:  # a stop moved: said once is enough
            return
        if stop < planned:
            s.display.notice(f"time budget: steps{at} now take {1000 * step_s:.0f} ms, slower than "
                             f"planned; stopping at step {stop} of {end} to end inside the budget "
                             "(the learning rate will not have decayed to its end)")
        else:
            s.display.notice(f"time budget: steps{at} at {1000 * step_s:.0f} ms, back on pace; "
                             f"training to step {planned} as planned")


def train_batch(s: TrainSession, x: torch.Tensor, y: torch.Tensor, size: int | None) -> None:
    """A loader's batch onto the device, resized to ``size`` (progressive resizing; None: as
    it is), then one :func:`train_step`: what the loop and the time-budget calibration run."""
    train_step(s, resize_batch(to_device(x, s.rt), size), y.to(s.rt.device, non_blocking=True))


def train_step(s: TrainSession, x: torch.Tensor, y: torch.Tensor) -> None:
    """One optimiser step (skipped on the device when the loss is not finite); no host sync."""
    tc = s.cfg.train
    lr = s.lr_fn(s.state.step)
    for group in s.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    with autocast(s.rt.device, s.rt.dtype):
        logits = s.net(x)
        loss = s.task.loss(logits, y, tc.label_smoothing)
    s.scaler.scale(loss).backward()
    if tc.clip_grad_norm:
        s.scaler.unscale_(s.optimizer)
        nn.utils.clip_grad_norm_(s.params, tc.clip_grad_norm, foreach=True)
    s.guard.step(loss)
    s.optimizer.zero_grad(set_to_none=True)
    if s.ema is not None:
        s.ema.update()
    s.recorder.record(s.state.step + 1, loss, logits.detach(), y)
    s.clock.samples += len(y) * s.rt.dist.world_size


def _mid_epoch_checkpoint_due(s: TrainSession) -> bool:
    # the epoch-end save covers the last batch (and writes its metrics row first)
    every, st = s.cfg.train.checkpoint_every, s.state
    return bool(every) and st.step % every == 0 and st.batch < s.steps_per_epoch


def _drain(s: TrainSession) -> None:
    """Read the recorded steps (one host sync), check them, add them to window and epoch."""
    stats = s.recorder.drain()
    s.guard.observe(stats, checkpointing.last_path(s))
    st = s.state
    for stat in stats:
        if math.isfinite(stat.loss):  # skipped steps add nothing
            s.window.add(stat)
            st.epoch_loss_sum += stat.loss * stat.size
            st.epoch_correct += stat.hits
            st.epoch_count += stat.size


def _log_window(s: TrainSession) -> None:
    st = s.state
    _drain(s)
    w = s.window.take()
    ips = s.clock.window_rate()
    row = {"step": st.step, "epoch": st.epoch + st.batch / s.steps_per_epoch,
           "lr": s.lr_fn(st.step - 1), "loss": w.loss_sum / w.count if w.count else None,
           "top1": w.hits / w.count if w.count and not s.task.regression else None,
           "images_per_s": ips,
           "elapsed_s": s.clock.elapsed_s}
    s.writer.step_row(row)
    if w.count:
        s.display.show_stats(row["loss"], row["top1"], ips)


def _save_mid_epoch(s: TrainSession) -> None:
    """Mid-epoch save of ``last`` (training resumes at the next batch)."""
    s.clock.pause()
    _drain(s)  # raises on divergence: a good checkpoint is never overwritten by a bad one
    checkpointing.save(s, "last", None)
    s.clock.resume()


def end_epoch(s: TrainSession) -> dict[str, Any]:
    """Evaluate, track (best, early stop, position), save (``best``, ``last``), log."""
    st = s.state
    s.clock.pause()
    _drain(s)
    complete = st.batch >= s.steps_per_epoch
    row = _epoch_row(s, complete)                        # evaluate
    st.history.append(row)                               # track
    improved = s.tracker.update(st, row)
    stop = _should_stop(s, row)
    if complete:
        st.epoch, st.batch = st.epoch + 1, 0
        st.epoch_loss_sum, st.epoch_correct, st.epoch_count = 0.0, 0.0, 0
        s.clock.new_epoch()
    st.finished = stop or st.epoch >= s.cfg.train.epochs or st.step >= s.total_steps
    if improved:                                         # save
        checkpointing.save(s, "best", row)
    checkpointing.save(s, "last", row)
    s.writer.epoch_row(row)                              # log
    s.display.epoch_done(row)
    s.clock.resume()
    return row


def _epoch_row(s: TrainSession, complete: bool) -> dict[str, Any]:
    st = s.state
    val = None
    if s.val_loader is not None:
        val = evaluate(s.eval_net, s.val_loader, device=s.rt.device, dtype=s.rt.dtype,
                       num_classes=s.num_classes, tta=s.tta, channels_last=s.rt.channels_last,
                       task=s.task, fold_bn=True)
    s.clock.tick()
    count = max(st.epoch_count, 1)
    row = {
        "epoch": st.epoch + 1 if complete else round(st.epoch + st.batch / s.steps_per_epoch, 4),
        "step": st.step, "lr": s.lr_fn(max(st.step - 1, 0)),
        "train_loss": st.epoch_loss_sum / count, "train_top1": st.epoch_correct / count,
        "val_loss": val.loss if val else None, "val_top1": val.top1 if val else None,
        "val_top5": val.top5 if val else None, "nonfinite_steps": s.guard.total,
        "images_per_s": s.clock.epoch_rate(), "epoch_time_s": s.clock.epoch_time_s,
        "elapsed_s": s.clock.elapsed_s,
    }
    row.update(s.task.epoch_metrics(row["train_loss"], val))  # regression: RMSE and R^2
    return row


def _should_stop(s: TrainSession, row: dict[str, Any]) -> bool:
    st = s.state
    asked = bool(s.on_epoch_end(row)) if s.on_epoch_end is not None else False
    asked = bool(distributed.broadcast_object(asked))
    if not (s.tracker.exhausted(st) or asked):
        return False
    if st.epoch + 1 < s.cfg.train.epochs:
        st.stopped_early = True
        s.display.message(f"stopping early after epoch {row['epoch']}: {s.tracker.metric} "
                          f"best {st.best_metric} at epoch {st.best_epoch}")
    return True


def _result(s: TrainSession) -> FitResult:
    st = s.state
    return FitResult(
        best_metric=st.best_metric, best_epoch=st.best_epoch,
        epochs_run=st.history[-1]["epoch"] if st.history else 0, steps=st.step,
        history=list(st.history), stopped_early=st.stopped_early, run_dir=s.run_dir,
        metric=s.tracker.metric,
        best_checkpoint=checkpointing.resolve_checkpoint_dir(s.ckpt_root / "best"),
        last_checkpoint=checkpointing.last_path(s),
    )
