"""Whole studies for the command line and notebooks: pick the models, get the data, measure, and
write CSV + JSON + PNG + Markdown into one folder (which ``resnetlab report`` then embeds).

Each study writes ``<study>.json`` with ``findings`` (sentences computed from the numbers), so a
report never needs to re-derive them.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.analysis import gradcam as _gradcam
from resnetlab.analysis import plots
from resnetlab.analysis.gradflow import describe, measure_gradflow, plain_twin_args, summarize
from resnetlab.analysis.lesion import describe_lesions, lesion_study
from resnetlab.analysis.runs import checkpoint_dirs, data_batches, is_run_dir, load_run
from resnetlab.models import create_model
from resnetlab.utils.errors import ConfigError

__all__ = ["gradflow_targets", "run_gradflow", "run_lesions", "run_explanations", "write_csv",
           "default_out", "run_batches"]

NORMS = {"batch": None, "none": nn.Identity}  # norm_layer for --norm (None: the model's own)


def default_out(source: str | os.PathLike, study: str) -> Path:
    """``RUN/analysis`` for a run (where the report looks), else ``analysis/<study>``."""
    return Path(source) / "analysis" if is_run_dir(source) else Path("analysis") / study


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Rows (dicts) as CSV; non-finite floats stay ``inf``/``nan`` (never blank or zero)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _json(obj: Any, path: Path) -> Path:
    # JSON has no inf/NaN: non-finite numbers become the strings "inf"/"nan" (still not zeros)
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return [clean(x) for x in v] if isinstance(v, (list, tuple)) else v
    path.write_text(json.dumps(clean(obj), indent=1) + "\n")
    return path


def gradflow_targets(sources: Sequence[str], *, compare_plain: bool, norm: str, seed: int,
                     in_chans: int, num_classes: int) -> list[tuple[str, nn.Module]]:
    """(label, model) pairs: registry names at initialisation, or a run at initialisation and at
    each saved checkpoint; ``compare_plain`` adds each model's plain twin at initialisation."""
    if norm not in NORMS:
        raise ConfigError(f"--norm {norm}: choose batch or none")
    out: list[tuple[str, nn.Module]] = []
    for source in sources:
        if is_run_dir(source):
            if norm != "batch":
                raise ConfigError(f"--norm {norm}: a trained run keeps its own normalisation; "
                                  "use --norm none with registry names (e.g. plain56)")
            torch.manual_seed(seed)
            init = load_run(source, weights=False)
            out.append((f"{init.name}@init", init.model))
            out += _checkpoint_targets(source)
            args = init.build_args
        else:
            kwargs = {"in_chans": in_chans, "num_classes": num_classes}
            if NORMS[norm] is not None:
                kwargs["norm_layer"] = NORMS[norm]
            torch.manual_seed(seed)
            out.append((source, _create(source, kwargs)))
            args = {"name": source, **kwargs}
        if compare_plain and "plain" not in args["name"]:
            label, kwargs = plain_twin_args(args)
            torch.manual_seed(seed)
            suffix = "@init" if is_run_dir(source) else ""  # a twin of a run is never trained
            out.append((label + suffix, _create(args["name"], kwargs)))
    return out


def _checkpoint_targets(source: str) -> list[tuple[str, nn.Module]]:
    """(label, model) for each saved checkpoint of a run; checkpoints of the same step (``best``
    is often ``last``) are measured once, as ``resnet56@best=last (epoch 6)``."""
    by_step: dict[Any, tuple[list[str], Any]] = {}
    for ckpt in checkpoint_dirs(source):
        run = load_run(ckpt)
        key = run.meta.get("step", ckpt.name)
        by_step.setdefault(key, ([], run))[0].append(ckpt.name)
    out = []
    for names, run in by_step.values():
        epoch = run.meta.get("epoch")
        at = f"epoch {epoch:.3g}" if isinstance(epoch, (int, float)) else "epoch ?"
        out.append((f"{run.name}@{'='.join(names)} ({at})", run.model))
    return out


def _create(name: str, kwargs: dict[str, Any]) -> nn.Module:
    if os.sep in name or Path(name).exists():
        raise ConfigError(f"{name}: not a run directory (no checkpoints/ inside) and not a model name")
    return create_model(name, **kwargs)


def run_gradflow(targets: Sequence[tuple[str, nn.Module]], batches, out: Path, *,
                 norm: str = "batch") -> dict[str, Any]:
    """Measure every target on the same ``batches``; write ``gradflow.csv`` (per layer/block),
    ``gradflow_summary.csv``, ``gradflow.png``, ``gradflow.json`` and ``gradflow.md``."""
    batches = list(batches)
    flows = [measure_gradflow(model, batches, label=label) for label, model in targets]
    summaries = [{**summarize(f), "norm": norm} for f in flows]
    findings = describe(summaries, norm)
    out.mkdir(parents=True, exist_ok=True)
    write_csv([r for f in flows for r in f.rows()], out / "gradflow.csv")
    write_csv(summaries, out / "gradflow_summary.csv")
    plots.plot_gradflow([{"label": f.label, "layers": f.layers, "blocks": f.blocks} for f in flows],
                        out / "gradflow.png", title=f"gradient flow (norm: {norm}, "
                        f"{sum(len(y) for _, y in batches)} images, training-mode BN)")
    result = {"study": "gradflow", "norm": norm, "summaries": summaries, "findings": findings,
              "figure": "gradflow.png"}
    _json(result, out / "gradflow.json")
    (out / "gradflow.md").write_text("\n".join(f"- {line}" for line in findings) + "\n")
    return result


def run_lesions(sources: Sequence[str], out: Path, *, data: str | None, data_dir: str | None,
                images: int, max_k: int, draws: int, seed: int) -> dict[str, Any]:
    """Lesion studies of trained runs on their test split; writes ``lesion.csv``,
    ``lesion_multi.csv``, ``lesion.png``, ``lesion.json``."""
    studies, findings = [], []
    for source in sources:
        run = load_run(source)
        batches, _ = run_batches(run, source, data, data_dir, "test", images)
        study = lesion_study(run.model, list(batches), label=f"{run.name} ({Path(source).name})",
                             max_k=max_k, draws=draws, seed=seed)
        studies.append(study)
        findings += describe_lesions(study)
    out.mkdir(parents=True, exist_ok=True)
    write_csv([{"model": s.label, "baseline": s.baseline, **r} for s in studies for r in s.single],
              out / "lesion.csv")
    write_csv([{"model": s.label, **r} for s in studies for r in s.multi], out / "lesion_multi.csv")
    dicts = [vars(s) for s in studies]
    plots.plot_lesions(dicts, out / "lesion.png")
    result = {"study": "lesion", "findings": findings, "figure": "lesion.png",
              "baselines": {s.label: s.baseline for s in studies}}
    _json(result, out / "lesion.json")
    return result


def run_batches(run, source, data: str | None, data_dir: str | None, split: str, images: int,
                batch_size: int = 128):
    """Batches of the data a run trained on (its saved split and sizes), or of ``data``."""
    name = data or run.data_name
    if not name:
        raise ConfigError(f"{source}: the checkpoint does not name its data set; pass --data NAME")
    saved = (run.meta.get("config") or {}).get("data") if name == run.data_name else None
    return data_batches(name, split=split, images=images, batch_size=batch_size,
                        data_dir=data_dir, saved=saved)


def run_explanations(source: str, inputs: Sequence[str], out: Path, *, method: str,
                     layer: str | None, per_class: int, data_dir: str | None,
                     batch_size: int = 64) -> dict[str, Any]:
    """Grad-CAM or saliency overlays for image files/folders (one PNG each, under
    ``out/<method>/``) and, with ``per_class``, a grid of test images per class."""
    from resnetlab.data import preprocess_inputs

    run = load_run(source)
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    layer_name = _gradcam.resolve_layer(run.model, layer)[0] if method == "gradcam" else "input"
    if inputs:
        x, names = preprocess_inputs([Path(p) for p in inputs], run.data_meta)
        maps, pred = _gradcam.explain(run.model, x, method, layer, batch_size=batch_size)
        shown = _gradcam.display_images(x, run.data_meta)
        for i, name in enumerate(names):
            png = out / method / f"{Path(name).stem}.png"
            plots.plot_explanations(shown[i:i + 1], maps[i:i + 1],
                                    [f"pred: {run.classes[int(pred[i])]}"], png, ncols=1)
            written.append(str(png))
    grid = None
    if per_class:
        grid = _class_grid(run, source, out, method, layer, per_class, data_dir, batch_size)
    result = {"study": method, "layer": layer_name, "files": written,
              "figure": grid.name if grid else None,
              "findings": [f"{method} on {layer_name} of {run.name}: {len(written)} image files"
                           + (f", grid of {per_class} test images per class" if grid else "")]}
    _json(result, out / f"{method}.json")
    return result


def _class_grid(run, source, out: Path, method: str, layer: str | None, per_class: int,
                data_dir: str | None, batch_size: int) -> Path:
    x, y = _test_images(run, source, data_dir)
    idx = _gradcam.per_class_indices(y, per_class, len(run.classes))
    x, y = x[idx], y[idx]
    maps, pred = _gradcam.explain(run.model, x, method, layer, batch_size=batch_size)
    titles = [f"true {run.classes[int(t)]}\npred {run.classes[int(p)]}" for t, p in zip(y, pred, strict=True)]
    return plots.plot_explanations(_gradcam.display_images(x, run.data_meta), maps, titles,
                                   out / f"{method}_grid.png", ncols=per_class)


def _test_images(run, source, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    # enough test images that every class is represented for small --per-class values
    batches, _ = run_batches(run, source, None, data_dir, "test", 2048)
    xs, ys = zip(*batches, strict=True)
    return torch.cat(xs), torch.cat(ys)
