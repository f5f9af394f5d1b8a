"""The training loop: :func:`fit` and :func:`evaluate`.

Device and precision are decided once, in :func:`prepare_runtime`; the step itself has one
autocast context and one ``GradScaler(enabled=...)`` (enabled only for fp16 on CUDA) and no
branches on precision.  The loop reads values back from the device only at its sync points
(every ``log_every`` steps, at checkpoints and at epoch ends), so a GPU is never left idle
waiting for the host.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.checkpoint import load_checkpoint, resolve_checkpoint_dir, save_checkpoint
from resnetlab.engine import distributed
from resnetlab.engine.config import RunConfig, TrainConfig
from resnetlab.engine.ema import ModelEma
from resnetlab.engine.guard import NonFiniteGuard
from resnetlab.engine.logging import MetricsWriter, ProgressDisplay
from resnetlab.engine.metrics import ClassificationMeter, EvalResult, StepRecorder, smoothed_nll
from resnetlab.engine.optim import build_optimizer
from resnetlab.engine.schedules import lr_schedule
from resnetlab.engine.state import TrainProgress, match_param_layout, rng_state, set_rng_state
from resnetlab.utils.device import autocast, resolve_device, resolve_dtype
from resnetlab.utils.errors import ConfigError
from resnetlab.utils.seed import seed_everything

__all__ = ["fit", "evaluate", "FitResult", "Runtime", "prepare_runtime", "epoch_batches"]

Batch = tuple[torch.Tensor, torch.Tensor]
# metrics.csv columns usable for best-checkpoint selection and early stopping; True = higher is better
METRICS = {"val_top1": True, "val_top5": True, "val_loss": False, "train_top1": True, "train_loss": False}


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


@dataclass
class Runtime:
    """Device, autocast dtype and process placement, decided once per run."""

    device: torch.device
    dtype: torch.dtype
    channels_last: bool = True
    dist: distributed.DistInfo = field(default_factory=distributed.DistInfo)


def prepare_runtime(cfg: TrainConfig) -> Runtime:
    """Resolve device/precision, set determinism and seed the global generators.

    ``deterministic`` turns on ``torch.use_deterministic_algorithms`` (and cuDNN's deterministic
    kernels); otherwise cuDNN may benchmark convolution algorithms, which is faster but picks
    kernels by timing.  Each rank seeds with ``seed + rank`` so dropout masks differ across ranks.
    """
    info = distributed.dist_info()
    device = resolve_device(cfg.device)
    if info.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    if cfg.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
    torch.use_deterministic_algorithms(cfg.deterministic)
    torch.backends.cudnn.deterministic = cfg.deterministic
    torch.backends.cudnn.benchmark = not cfg.deterministic
    seed_everything(cfg.seed + info.rank)
    return Runtime(device, resolve_dtype(cfg.precision, device), cfg.channels_last, info)


def check_train_config(tc: TrainConfig) -> None:
    """One-line :class:`ConfigError` for values the loop cannot run with."""
    checks = [
        (tc.epochs >= 1, f"train.epochs must be >= 1, got {tc.epochs}"),
        (tc.log_every >= 1, f"train.log_every must be >= 1, got {tc.log_every}"),
        (tc.checkpoint_every is None or tc.checkpoint_every >= 0,
         f"train.checkpoint_every must be >= 0 steps (0 or null: only at epoch ends), got {tc.checkpoint_every}"),
        (tc.max_steps is None or tc.max_steps >= 1, f"train.max_steps must be >= 1, got {tc.max_steps}"),
        (0.0 <= tc.label_smoothing < 1.0, f"train.label_smoothing must be in [0, 1), got {tc.label_smoothing}"),
        (tc.ema_decay is None or 0.0 < tc.ema_decay < 1.0,
         f"train.ema_decay must be in (0, 1), e.g. 0.999, got {tc.ema_decay}"),
        (tc.clip_grad_norm is None or tc.clip_grad_norm > 0, f"train.clip_grad_norm must be > 0, got {tc.clip_grad_norm}"),
        (tc.early_stop_patience is None or tc.early_stop_patience >= 1,
         f"train.early_stop_patience must be >= 1 epochs, got {tc.early_stop_patience}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _global_flags() -> tuple[bool, bool, bool]:
    return (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark)


def _restore_flags(flags: tuple[bool, bool, bool]) -> None:
    """Put back the caller's determinism settings: fit must not change them for the process."""
    torch.use_deterministic_algorithms(flags[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[1], flags[2]


def _to_device(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    fmt = torch.channels_last if rt.channels_last and x.dim() == 4 else torch.preserve_format
    return x.to(rt.device, non_blocking=True, memory_format=fmt)


def epoch_batches(loader: Iterable, epoch: int, start: int = 0, steps: int | None = None,
                  rank: int = 0, world_size: int = 1) -> Iterator:
    """Batches ``start, start + 1, ...`` of ``epoch`` for this rank.

    Loaders with an ``epoch(epoch, start=)`` method (resnetlab's) jump straight to ``start``;
    other iterables are iterated and the first batches skipped.  With ``world_size > 1`` rank
    ``r`` takes every ``world_size``-th batch from ``r`` on (see :mod:`distributed`).
    """
    shard = world_size > 1 and getattr(loader, "world_size", 1) != world_size
    first = start * world_size + rank if shard else start
    if hasattr(loader, "epoch"):
        it = iter(loader.epoch(epoch, start=first))
    else:
        it = itertools.islice(iter(loader), first, None)
    if shard:
        it = itertools.islice(it, 0, None, world_size)
    return itertools.islice(it, None if steps is None else max(steps - start, 0))


def _steps_per_epoch(loader: Iterable, world_size: int) -> int:
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError("the training loader has no len(); pass a sized iterable of (x, y) "
                          "batches (a list, a DataLoader or a resnetlab loader)") from None
    if world_size > 1 and getattr(loader, "world_size", 1) != world_size:
        n //= world_size
    if n < 1:
        raise ConfigError(f"the training set gives {n} batches per epoch on each of {world_size} "
                          "process(es); lower data.batch_size or use more data")
    return n


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, device: torch.device | str,
             dtype: torch.dtype = torch.float32, num_classes: int,
             tta: Callable[[torch.Tensor], Iterable[torch.Tensor]] | None = None,
             label_smoothing: float = 0.0, channels_last: bool = False) -> EvalResult:
    """Loss, top-1/top-5, per-class accuracy and confusion matrix of ``model`` on ``loader``.

    With ``tta`` (e.g. ``resnetlab.data.flip_tta``) the softmax probabilities of the views it
    yields are averaged and the loss is the cross-entropy of that average.  Under torchrun each
    rank evaluates every ``world_size``-th batch and the sums are all-reduced.
    """
    rt = Runtime(torch.device(device), dtype, channels_last, distributed.dist_info())
    was_training = model.training
    model.eval()
    meter = ClassificationMeter(num_classes, rt.device)
    batches = itertools.islice(iter(loader), rt.dist.rank, None, rt.dist.world_size)
    for x, y in batches:
        x, y = _to_device(x, rt), y.to(rt.device, non_blocking=True)
        log_probs = _log_probs(model, x, rt, tta)
        meter.update(log_probs, y, smoothed_nll(log_probs, y, label_smoothing))
    meter.all_reduce()
    model.train(was_training)
    return meter.result()


def _log_probs(model: nn.Module, x: torch.Tensor, rt: Runtime, tta: Callable | None) -> torch.Tensor:
    with autocast(rt.device, rt.dtype):
        if tta is None:
            return model(x).float().log_softmax(dim=1)
        views = list(tta(x))
        probs = sum(model(v).float().softmax(dim=1) for v in views) / len(views)
    return probs.clamp_min(torch.finfo(torch.float32).tiny).log()


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None, cfg: RunConfig,
        run_dir: str | Path, *, num_classes: int, extra_meta: dict[str, Any] | None = None,
        resume: bool = False, tta: Callable | None = None, progress: bool | None = None,
        on_epoch_end: Callable[[dict[str, Any]], Any] | None = None) -> FitResult:
    """Train ``model`` on ``train_loader`` as ``cfg`` says, writing the run into ``run_dir``.

    Moves the model to the resolved device (channels_last, optional ``torch.compile``, DDP
    under torchrun), writes ``config.yaml``, ``metrics.csv``/``steps.csv`` (+ ``.jsonl``),
    ``checkpoints/last`` (every ``checkpoint_every`` steps and each epoch) and
    ``checkpoints/best`` (by ``train.early_stop_metric``; EMA weights when ``ema_decay`` is
    set).  ``extra_meta`` (JSON-able: model build arguments, data meta, classes) goes into every
    checkpoint.  ``resume=True`` continues from ``run_dir/checkpoints/last`` exactly, including
    the position inside the epoch.  ``tta`` is used for the validation evaluations;
    ``on_epoch_end(row)`` is called after each epoch and stops training by returning True.
    Raises :class:`TrainingDiverged` after ``max_nonfinite_steps`` non-finite losses in a row.
    """
    flags = _global_flags()
    try:
        trainer = _Trainer(model, train_loader, val_loader, cfg, Path(run_dir), num_classes,
                           dict(extra_meta or {}), tta, progress, on_epoch_end)
        return trainer.run(resume)
    finally:
        _restore_flags(flags)


class _Trainer:
    """State of one :func:`fit` call; each method is one phase of the loop."""

    def __init__(self, model, train_loader, val_loader, cfg: RunConfig, run_dir: Path,
                 num_classes: int, extra_meta: dict, tta, progress, on_epoch_end):
        self.cfg, self.tc, self.run_dir = cfg, cfg.train, run_dir
        self.train_loader, self.val_loader, self.tta = train_loader, val_loader, tta
        self.num_classes, self.extra_meta, self.on_epoch_end = num_classes, extra_meta, on_epoch_end
        check_train_config(cfg.train)
        self.rt = prepare_runtime(cfg.train)
        self.main = self.rt.dist.is_main
        self.model = model.to(self.rt.device)
        if self.rt.channels_last:
            self.model.to(memory_format=torch.channels_last)
        base = distributed.wrap_ddp(self.model, self.rt.device)
        self.net = torch.compile(base) if self.tc.compile else base
        self.eval_net = self.net if base is self.model else (
            torch.compile(self.model) if self.tc.compile else self.model)
        self._build_optimisation()
        self.metric, self.higher_is_better = self._pick_metric()
        self.state = TrainProgress()
        self.writer = MetricsWriter(run_dir, enabled=self.main)
        self.progress = ProgressDisplay(progress, self.total_steps, self.tc.epochs, enabled=self.main)

    def _build_optimisation(self) -> None:
        tc = self.tc
        self.steps_per_epoch = _steps_per_epoch(self.train_loader, self.rt.dist.world_size)
        self.total_steps = tc.epochs * self.steps_per_epoch
        if tc.max_steps is not None:
            self.total_steps = min(self.total_steps, tc.max_steps)
        self.optimizer = build_optimizer(self.model, self.cfg.optim)
        self.lr_fn = lr_schedule(self.cfg.schedule, self.cfg.optim.lr,
                                 tc.epochs * self.steps_per_epoch, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.rt.device.type, enabled=self.rt.dtype == torch.float16)
        self.ema = ModelEma(self.model, tc.ema_decay) if tc.ema_decay else None
        if self.ema is not None:
            self.eval_net = self.ema.module
        self.guard = NonFiniteGuard(self.model, self.optimizer, self.scaler,
                                    tc.max_nonfinite_steps, self.lr_fn)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        # the loop drains every log_every steps and at each epoch end
        self.recorder = StepRecorder(max(1, min(tc.log_every, self.steps_per_epoch)), self.rt.device)
        self.window = [0.0, 0.0, 0]  # loss-sum, hits, images of the finite steps since the last row
        self.clock = _TrainClock()

    def _pick_metric(self) -> tuple[str, bool]:
        name = self.tc.early_stop_metric
        if name not in METRICS:
            raise ConfigError(f"train.early_stop_metric {name!r}: choose one of {', '.join(METRICS)}")
        if name.startswith("val_") and self.val_loader is None:
            if self.tc.early_stop_patience:
                raise ConfigError(f"--early-stop needs a validation split to watch {name}; "
                                  "set data.val_size > 0 or early_stop_metric=train_loss")
            name = name.replace("val_", "train_") if name != "val_top5" else "train_top1"
        return name, METRICS[name]

    # ------------------------------------------------------------------ the run

    def run(self, resume: bool) -> FitResult:
        if resume:
            self._resume()
        elif self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.main:
            self.cfg.to_yaml(self.run_dir / "config.yaml")
        self.guard.take_snapshot()
        self._clock = time.perf_counter()
        self.clock = _TrainClock()
        try:
            while not self.state.finished:
                self._train_epoch()
        finally:
            self.progress.close()
            self.writer.close()
            self.guard.close()
        distributed.barrier()
        return self._result()

    def _train_epoch(self) -> None:
        st = self.state
        self.net.train()
        self.progress.set_position(st.epoch, st.step)
        batches = epoch_batches(self.train_loader, st.epoch, st.batch, self.steps_per_epoch,
                                self.rt.dist.rank, self.rt.dist.world_size)
        for x, y in batches:
            self._train_step(_to_device(x, self.rt), y.to(self.rt.device, non_blocking=True))
            st.batch += 1
            st.step += 1
            self.progress.advance()
            if st.step % self.tc.log_every == 0:
                self._log_window()
            if st.step >= self.total_steps:
                break
            if self._mid_epoch_checkpoint_due():
                self._save_last()
        if st.batch < self.steps_per_epoch and st.step < self.total_steps:
            raise ConfigError(f"the training loader gave {st.batch} batches in epoch {st.epoch + 1} "
                              f"but its len() is {self.steps_per_epoch}; make len() match the batches")
        self._end_epoch()

    def _mid_epoch_checkpoint_due(self) -> bool:
        # the epoch-end save covers the last batch (and writes its metrics row first)
        every, st = self.tc.checkpoint_every, self.state
        return bool(every) and st.step % every == 0 and st.batch < self.steps_per_epoch

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        lr = self.lr_fn(self.state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with autocast(self.rt.device, self.rt.dtype):
            logits = self.net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.tc.label_smoothing)
        self.scaler.scale(loss).backward()
        if self.tc.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.params, self.tc.clip_grad_norm, foreach=True)
        self.guard.step(loss)
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        self.recorder.record(self.state.step + 1, loss, logits.detach(), y)
        self.clock.samples += len(y) * self.rt.dist.world_size

    # ------------------------------------------------------------- sync points

    def _drain(self) -> None:
        """Read the recorded steps (one host sync), check them, add them to window and epoch."""
        stats = self.recorder.drain()
        self.guard.observe(stats, self._last_path())
        st = self.state
        for s in stats:
            if math.isfinite(s.loss):  # skipped steps add nothing
                loss_sum = s.loss * s.size
                self.window = [self.window[0] + loss_sum, self.window[1] + s.hits, self.window[2] + s.size]
                st.epoch_loss_sum += loss_sum
                st.epoch_correct += s.hits
                st.epoch_count += s.size

    def _tick(self) -> None:
        now = time.perf_counter()
        self.state.elapsed_s += now - self._clock
        self.state.epoch_time_s += now - self._clock
        self._clock = now

    def _log_window(self) -> None:
        st = self.state
        self._drain()
        loss_sum, hits, n = self.window
        self.window = [0.0, 0.0, 0]
        self._tick()
        ips = self.clock.window_rate()
        row = {"step": st.step, "epoch": st.epoch + st.batch / self.steps_per_epoch,
               "lr": self.lr_fn(st.step - 1), "loss": loss_sum / n if n else None,
               "top1": hits / n if n else None, "images_per_s": ips, "elapsed_s": st.elapsed_s}
        self.writer.step_row(row)
        if n:
            self.progress.show_stats(row["loss"], row["top1"], ips)

    def _end_epoch(self) -> None:
        st = self.state
        self.clock.pause()
        self._drain()
        nonfinite = self.guard.total
        complete = st.batch >= self.steps_per_epoch
        row = self._epoch_row(nonfinite, complete)
        st.history.append(row)
        self.writer.epoch_row(row)
        self.progress.epoch_done(row)
        improved = self._update_best(row)
        stop = self._should_stop(row)
        if complete:
            st.epoch, st.batch, st.epoch_time_s = st.epoch + 1, 0, 0.0
            st.epoch_loss_sum = st.epoch_correct = 0.0
            st.epoch_count = 0
            self.clock.new_epoch()
        st.finished = stop or st.epoch >= self.tc.epochs or st.step >= self.total_steps
        if improved:
            self._save("best", row)
        self._save("last", row)
        self.clock.resume()

    def _epoch_row(self, nonfinite: int, complete: bool) -> dict[str, Any]:
        st = self.state
        val = None
        if self.val_loader is not None:
            val = evaluate(self.eval_net, self.val_loader, device=self.rt.device, dtype=self.rt.dtype,
                           num_classes=self.num_classes, tta=self.tta,
                           channels_last=self.rt.channels_last)
        self._tick()
        count = max(st.epoch_count, 1)
        return {
            "epoch": st.epoch + 1 if complete else round(st.epoch + st.batch / self.steps_per_epoch, 4),
            "step": st.step, "lr": self.lr_fn(max(st.step - 1, 0)),
            "train_loss": st.epoch_loss_sum / count, "train_top1": st.epoch_correct / count,
            "val_loss": val.loss if val else None, "val_top1": val.top1 if val else None,
            "val_top5": val.top5 if val else None, "nonfinite_steps": nonfinite,
            "images_per_s": self.clock.epoch_rate(), "epoch_time_s": st.epoch_time_s,
            "elapsed_s": st.elapsed_s,
        }

    def _update_best(self, row: dict[str, Any]) -> bool:
        st, value = self.state, row.get(self.metric)
        if value is not None and math.isfinite(value) and (
            st.best_metric is None
            or (value > st.best_metric if self.higher_is_better else value < st.best_metric)
        ):
            st.best_metric, st.best_epoch, st.bad_epochs = value, row["epoch"], 0
            return True
        st.bad_epochs += 1
        return False

    def _should_stop(self, row: dict[str, Any]) -> bool:
        st, patience = self.state, self.tc.early_stop_patience
        asked = bool(self.on_epoch_end(row)) if self.on_epoch_end is not None else False
        asked = bool(distributed.broadcast_object(asked))
        if (patience and st.bad_epochs >= patience) or asked:
            if st.epoch + 1 < self.tc.epochs:
                st.stopped_early = True
                self.progress.message(f"stopping early after epoch {row['epoch']}: {self.metric} "
                                      f"best {st.best_metric} at epoch {st.best_epoch}")
            return True
        return False

    # ---------------------------------------------------------------- checkpoints

    @property
    def ckpt_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def _last_path(self) -> Path | None:
        return resolve_checkpoint_dir(self.ckpt_root / "last")

    def _save_last(self) -> None:
        """Mid-epoch save of ``last`` (training resumes at the next batch)."""
        self.clock.pause()
        self._tick()
        self._drain()  # raises on divergence: a good checkpoint is never overwritten by a bad one
        self._save("last", None)
        self.clock.resume()

    def _save(self, kind: str, row: dict[str, Any] | None) -> None:
        self.state.nonfinite_steps = self.guard.total
        if not self.main:
            return
        use_ema = kind == "best" and self.ema is not None
        weights = (self.ema.module if use_ema else self.model).state_dict()
        train_state = self._train_state() if kind == "last" else None
        meta = self._meta(row, "ema" if use_ema else "model")
        save_checkpoint(self.ckpt_root / kind, model_state=weights, train_state=train_state, meta=meta)

    def _meta(self, row: dict[str, Any] | None, weights: str) -> dict[str, Any]:
        st = self.state
        return {
            **self.extra_meta, "num_classes": self.num_classes, "weights": weights,
            "epoch": row["epoch"] if row else st.epoch + st.batch / self.steps_per_epoch,
            "step": st.step, "metrics": row, "metric": self.metric, "best_metric": st.best_metric,
            "best_epoch": st.best_epoch, "config": self.cfg.to_dict(),
        }

    def _train_state(self) -> dict[str, Any]:
        return {
            "progress": self.state.to_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
            "rng": rng_state(), "world_size": self.rt.dist.world_size,
        }

    def _resume(self) -> None:
        found = self._last_path()
        if found is None:
            raise ConfigError(f"--resume {self.run_dir}: no checkpoints/last there (the run stopped "
                              "before its first checkpoint, or this is not a run directory)")
        ckpt = load_checkpoint(found)
        ts = ckpt.train_state
        if ts is None:
            raise ConfigError(f"--resume {self.run_dir}: {found} holds weights only, no training state")
        if ts.get("world_size", 1) != self.rt.dist.world_size:
            raise ConfigError(f"--resume {self.run_dir}: saved with {ts['world_size']} processes; "
                              f"resume with the same number (now {self.rt.dist.world_size})")
        ckpt.load_into(self.model)
        self.optimizer.load_state_dict(ts["optimizer"])
        match_param_layout(self.optimizer)
        self.scaler.load_state_dict(ts["scaler"])
        if self.ema is not None and ts.get("ema") is not None:
            self.ema.load_state_dict(ts["ema"])
        elif self.ema is not None:
            self.ema = ModelEma(self.model, self.tc.ema_decay)
            self.eval_net = self.ema.module
        self._restore_progress(TrainProgress.from_dict(ts["progress"]))
        set_rng_state(ts["rng"])

    def _restore_progress(self, st: TrainProgress) -> None:
        st.finished = st.stopped_early or st.epoch >= self.tc.epochs or st.step >= self.total_steps
        self.state = st
        self.guard.reset(st.nonfinite_steps)
        self.writer.truncate_after(st.step)
        self.progress.message(f"resuming {self.run_dir} at epoch {st.epoch + 1}, batch {st.batch}, "
                              f"step {st.step}")

    def _result(self) -> FitResult:
        st = self.state
        return FitResult(
            best_metric=st.best_metric, best_epoch=st.best_epoch,
            epochs_run=st.history[-1]["epoch"] if st.history else 0, steps=st.step,
            history=list(st.history), stopped_early=st.stopped_early, run_dir=self.run_dir,
            metric=self.metric, best_checkpoint=resolve_checkpoint_dir(self.ckpt_root / "best"),
            last_checkpoint=self._last_path(),
        )


class _TrainClock:
    """Seconds spent in training steps only (evaluation and checkpoints excluded), for img/s."""

    def __init__(self):
        self.samples = 0
        self._window = [0, 0.0]  # samples, seconds at the last window mark
        self._epoch = [0, 0.0]
        self.seconds = 0.0
        self._start: float | None = time.perf_counter()

    def _now(self) -> float:
        return self.seconds + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def pause(self) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def resume(self) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def _rate(self, mark: list) -> float:
        now = self._now()
        rate = (self.samples - mark[0]) / max(now - mark[1], 1e-9)
        mark[0], mark[1] = self.samples, now
        return rate

    def window_rate(self) -> float:
        return self._rate(self._window)

    def epoch_rate(self) -> float:
        return self._rate(list(self._epoch))

    def new_epoch(self) -> None:
        self._epoch = [self.samples, self._now()]
