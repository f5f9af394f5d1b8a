"""Checkpoints of a training run: what ``last`` and ``best`` hold, and exact resume from ``last``.

``last`` holds the weights plus the training state (optimiser, scaler, EMA, RNG, progress
including the position inside the epoch); ``best`` holds the weights only (the EMA weights when
the run keeps an EMA).  Both carry the meta that rebuilds the network (``extra_meta``), the
config and the metrics row of the epoch they come from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resnetlab.checkpoint import load_checkpoint, resolve_checkpoint_dir, save_checkpoint
from resnetlab.engine import distributed
from resnetlab.engine.ema import ModelEma
from resnetlab.engine.session import TrainSession
from resnetlab.engine.state import TrainProgress, match_param_layout, rng_state, set_rng_state
from resnetlab.utils.errors import ConfigError
from resnetlab.utils.notices import say

__all__ = ["save", "last_path", "restore"]


def last_path(s: TrainSession) -> Path | None:
    """The ``last`` checkpoint of the run, if one was written."""
    return resolve_checkpoint_dir(s.ckpt_root / "last")


def save(s: TrainSession, kind: str, row: dict[str, Any] | None) -> None:
    """Write ``checkpoints/<kind>`` (rank 0 only); ``row`` is the epoch's metrics (None mid-epoch)."""
    s.state.nonfinite_steps = s.guard.total
    s.state.elapsed_s, s.state.epoch_time_s = s.clock.elapsed_s, s.clock.epoch_time_s
    if not s.main:
        return
    use_ema = kind == "best" and s.ema is not None
    weights = (s.ema.module if use_ema else s.model).state_dict()
    train_state = _train_state(s) if kind == "last" else None
    save_checkpoint(s.ckpt_root / kind, model_state=weights, train_state=train_state,
                    meta=_meta(s, row, "ema" if use_ema else "model"))


def _meta(s: TrainSession, row: dict[str, Any] | None, weights: str) -> dict[str, Any]:
    st = s.state
    return {
        **s.extra_meta, "num_classes": s.num_classes, "weights": weights,
        "epoch": row["epoch"] if row else st.epoch + st.batch / s.steps_per_epoch,
        "step": st.step, "metrics": row, "metric": s.tracker.metric, "best_metric": st.best_metric,
        "best_epoch": st.best_epoch, "config": s.cfg.to_dict(),
    }


def _train_state(s: TrainSession) -> dict[str, Any]:
    return {
        "progress": s.state.to_dict(), "optimizer": s.optimizer.state_dict(),
        "scaler": s.scaler.state_dict(), "ema": s.ema.state_dict() if s.ema else None,
        "rng": rng_state(), "world_size": s.rt.dist.world_size,
    }


def restore(s: TrainSession) -> TrainProgress:
    """Load ``last`` into the session's model, optimiser, scaler, EMA and RNGs; returns the
    saved progress (the caller continues from it)."""
    found = last_path(s)
    if found is None:
        raise ConfigError(f"--resume {s.run_dir}: no checkpoints/last there (the run stopped "
                          "before its first checkpoint, or this is not a run directory)")
    ckpt = load_checkpoint(found)
    ts = ckpt.train_state
    if ts is None:
        raise ConfigError(f"--resume {s.run_dir}: {found} holds weights only, no training state")
    ckpt.load_into(s.model)
    s.optimizer.load_state_dict(ts["optimizer"])
    match_param_layout(s.optimizer)
    s.scaler.load_state_dict(ts["scaler"])
    if s.ema is not None and ts.get("ema") is not None:
        s.ema.load_state_dict(ts["ema"])
    elif s.ema is not None:  # EMA turned on at resume: start it from the loaded weights
        s.ema = ModelEma(s.model, s.cfg.train.ema_decay)
    set_rng_state(ts["rng"])
    return _on_world(s, TrainProgress.from_dict(ts["progress"]), ts.get("world_size", 1))


def _on_world(s: TrainSession, st: TrainProgress, saved_world: int) -> TrainProgress:
    """The saved position on this run's world size: per-rank batches and steps scale with
    ``saved_world / world`` (the epoch's samples and the schedule's fraction stay put)."""
    world = s.rt.dist.world_size
    if saved_world == world:
        return st
    st.batch = min(distributed.map_batch(st.batch, saved_world, world), s.steps_per_epoch)
    st.step = st.epoch * s.steps_per_epoch + st.batch
    if s.main:  # said even without a progress display: the run's step numbers change here
        say(f"resuming a {saved_world}-process checkpoint on {world}: epoch {st.epoch + 1} "
            f"continues at batch {st.batch} of {s.steps_per_epoch}")
    return st
