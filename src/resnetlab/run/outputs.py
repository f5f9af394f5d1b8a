"""The end of a run: the one final evaluation, ``results.json`` and the plots."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.analysis import plot_confusion, plot_curves
from resnetlab.checkpoint import load_checkpoint
from resnetlab.data import flip_tta
from resnetlab.data.loaders import bounded
from resnetlab.engine import evaluate
from resnetlab.engine.config import RunConfig
from resnetlab.engine.logging import tracked
from resnetlab.engine.loop import FitResult
from resnetlab.run.build import flip_tta_applies
from resnetlab.run.tasks import task_of
from resnetlab.utils.device import cpu_model, resolve_dtype

__all__ = ["final_results", "write_outputs", "environment", "training_rate"]


def final_results(model: nn.Module, bundle: Any, cfg: RunConfig, fitted: FitResult, test_on: str,
                  device: torch.device, progress: bool | None = None) -> dict[str, Any]:
    """Evaluate the ``test_on`` checkpoint once on the test split (validation if none)."""
    path = (fitted.best_checkpoint if test_on == "best" else None) or fitted.last_checkpoint
    ckpt = load_checkpoint(path, train_state=False)
    ckpt.load_into(model)
    has_test = bundle.test is not None and bundle.test.num_samples > 0
    split, loader = ("test", bundle.test) if has_test else ("val", bundle.val)
    loader = bounded(loader, cfg.data.test_size, cfg.data.split_seed)  # --test-size
    tta = flip_tta if flip_tta_applies(cfg, bundle) else None
    dtype = resolve_dtype(cfg.train.precision, device)
    result = evaluate(model, tracked(loader, f"final {split} evaluation", progress), device=device,
                      dtype=dtype, num_classes=bundle.num_classes, tta=tta,
                      channels_last=cfg.train.channels_last,
                      task=task_of(bundle.meta, bundle.num_classes, bundle.classes), fold_bn=True)
    last = fitted.history[-1] if fitted.history else {}
    row = ckpt.meta.get("metrics") or last  # the epoch these weights come from
    table = bundle.meta.get("kind") == "table"
    regression = ({"task": "regression", "rmse": result.rmse, "r2": result.r2,
                   "val_rmse": row.get("val_rmse"), "val_r2": row.get("val_r2")}
                  if result.rmse is not None else {})
    return {**regression,
        "split": split, "test_size": cfg.data.test_size, "checkpoint": str(path), "weights": ckpt.meta.get("weights", "model"),
        "checkpoint_epoch": ckpt.meta.get("epoch"), "tta": tta is not None,
        "loss": result.loss, "top1": result.top1, "top5": result.top5,
        "num_samples": result.num_samples, "num_classes": bundle.num_classes,
        "classes": list(bundle.classes), "per_class": result.per_class,
        "confusion": result.confusion, "val_top1": row.get("val_top1"),
        "val_top5": row.get("val_top5"), "train_time_s": last.get("elapsed_s"),
        "images_per_s": training_rate(fitted.history, cfg.data.batch_size),
        "rate_unit": "rows/s" if table else "images/s",
        "steps": fitted.steps, "epochs": fitted.epochs_run, "stopped_early": fitted.stopped_early,
        "best_epoch": fitted.best_epoch, "metric": fitted.metric,
        "data_split": bundle.meta.get("split"), "environment": environment(device, dtype),
    }


def training_rate(history: list[dict[str, Any]], batch_size: int) -> float | None:
    """Samples/s over the whole run, training steps only: total samples / total step time."""
    samples = seconds = 0.0
    previous = 0
    for row in history:
        n = (row["step"] - previous) * batch_size
        previous = row["step"]
        if row.get("images_per_s"):
            samples, seconds = samples + n, seconds + n / row["images_per_s"]
    return samples / seconds if seconds else None


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """What actually ran (``precision: auto`` in config.yaml does not say): the resolved device
    and dtype, the torch version and the CPU/GPU model."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": str(device), "dtype": str(dtype).removeprefix("torch."),
            "torch": torch.__version__, "python": platform.python_version(),
            "cpu": cpu_model(), "gpu": gpu, "threads": torch.get_num_threads()}


def write_outputs(run_dir: Path, results: dict[str, Any], classes: list[str]) -> None:
    """``results.json``, ``curves.png`` (from metrics.csv) and ``confusion.png``."""
    (run_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if (run_dir / "metrics.csv").is_file():
        plot_curves(run_dir / "metrics.csv", run_dir / "curves.png", title=run_dir.name)
    if results.get("task") == "regression":  # no classes, so no confusion matrix
        return
    title = (f"{results['split']} top-1 {100 * results['top1']:.2f}% "
             f"({Path(results['checkpoint']).name} checkpoint{', flip TTA' if results['tta'] else ''})")
    plot_confusion(results["confusion"], classes, run_dir / "confusion.png", title=title)
