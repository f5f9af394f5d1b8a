"""Figures for run directories: training curves and confusion matrices.

This is the only module of resnetlab that imports matplotlib, and it does so lazily, inside the
functions: importing ``resnetlab.analysis`` costs nothing, and a machine without a display works.
Figures are drawn on matplotlib's object-oriented ``Figure`` with an explicit Agg canvas instead
of ``pyplot``, so no global backend is switched (a user's notebook keeps its own) and no figure
is left open in pyplot's registry.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from resnetlab.utils.errors import DataError

__all__ = ["read_metrics", "plot_curves", "plot_confusion", "plot_gradflow", "plot_lesions",
           "plot_explanations",
           "plot_degradation", "plot_train_sizes", "plot_label_efficiency", "plot_sweep_history", "plot_importances",
           "plot_sweep_slices"]

# Beyond this many classes cell annotations become unreadable at any sensible figure size.
_ANNOTATE_MAX_CLASSES = 20
# Beyond this many classes tick labels overlap; the axes show indices only.
_LABEL_MAX_CLASSES = 40


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` atomically: a reader never sees a half-written PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    os.replace(tmp, path)
    return path


def _number(value: Any) -> float | Any:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` with numeric cells as floats (empty cells become NaN)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such metrics file (is this a run directory?)")
    with path.open(newline="") as fh:
        rows = [
            {k: (math.nan if v in ("", None) else _number(v)) for k, v in row.items() if k}
            for row in csv.DictReader(fh)
        ]
    return rows


def _epoch_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Keep per-epoch rows when the table mixes kinds (a ``kind`` column of epoch/step)."""
    if rows and "kind" in rows[0]:
        kept = [r for r in rows if r.get("kind") == "epoch"]
        return kept or list(rows)
    return list(rows)


def _series(rows, key: str) -> list[float]:
    return [float(r[key]) if isinstance(r.get(key), float) else math.nan for r in rows]


def _columns(rows, predicate) -> list[str]:
    keys = [k for k in rows[0] if predicate(k)]
    return [k for k in keys if any(isinstance(r.get(k), float) and not math.isnan(r[k]) for r in rows)]


def _is_accuracy(key: str) -> bool:
    # top-5 is left out: near 100% on small label sets, it squashes the top-1 curves.
    return "top1" in key or key.endswith("acc") or key.endswith("accuracy")


def _draw_panel(ax, x, rows, keys, *, ylabel: str, percent: bool) -> None:
    for key in keys:
        ys = _series(rows, key)
        finite = [y for y in ys if not math.isnan(y)]
        # Accuracies stored as fractions are drawn in percent, the unit papers quote.
        scale = 100.0 if percent and finite and max(finite) <= 1.0 else 1.0
        ax.plot(x, [y * scale for y in ys], marker="o" if len(x) <= 30 else None, ms=3, label=key)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if keys:
        ax.legend(fontsize=8)


def plot_curves(
    metrics: str | os.PathLike | Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Loss and accuracy (and learning rate, when logged) against epoch; returns ``path``.

    ``metrics`` is a ``metrics.csv`` path or a list of row dicts.  Columns ending in ``loss`` go
    to the loss panel, ``*top1*`` / ``*acc`` / ``*accuracy`` columns to the accuracy panel, and
    ``lr`` to a third panel.  The x axis is ``epoch`` when present, else ``step``, else the row.
    """
    rows = read_metrics(metrics) if isinstance(metrics, (str, os.PathLike)) else list(metrics)
    rows = _epoch_rows([{k: _number(v) for k, v in r.items()} for r in rows])
    if not rows:
        raise DataError(f"{metrics if isinstance(metrics, (str, os.PathLike)) else 'metrics'}: "
                        "no rows to plot (did the run finish an epoch?)")
    xkey = next((k for k in ("epoch", "step") if k in rows[0]), None)
    x = _series(rows, xkey) if xkey else list(range(1, len(rows) + 1))
    losses = _columns(rows, lambda k: k.endswith("loss"))
    accs = _columns(rows, _is_accuracy)
    has_lr = bool(_columns(rows, lambda k: k == "lr"))
    panels = 2 + has_lr
    fig = _figure(4.2 * panels, 3.4)
    axes = fig.subplots(1, panels)
    _draw_panel(axes[0], x, rows, losses, ylabel="loss", percent=False)
    _draw_panel(axes[1], x, rows, accs, ylabel="accuracy (%)", percent=True)
    if has_lr:
        _draw_panel(axes[2], x, rows, ["lr"], ylabel="learning rate", percent=False)
    for ax in axes:
        ax.set_xlabel(xkey or "row")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _normalise_rows(matrix: list[list[float]]) -> list[list[float]]:
    """Each row divided by its count: cell (i, j) = P(predicted j | true i), i.e. recall on the diagonal."""
    return [[v / s if (s := sum(row)) else 0.0 for v in row] for row in matrix]


def plot_confusion(
    confusion: Sequence[Sequence[float]] | Any,
    classes: Iterable[str] | None,
    path: str | os.PathLike,
    *,
    normalize: bool = True,
    title: str | None = None,
) -> Path:
    """Heat map of a confusion matrix (rows: true class, columns: predicted); returns ``path``.

    ``confusion`` is a square list of lists, NumPy array or tensor of counts.  With ``normalize``
    each row is divided by its total, so the diagonal reads as per-class recall; cells are
    annotated (with counts when not normalised) for up to 20 classes.
    """
    matrix = [[float(v) for v in row] for row in (confusion.tolist() if hasattr(confusion, "tolist") else confusion)]
    n = len(matrix)
    if n == 0 or any(len(row) != n for row in matrix):
        raise DataError(f"confusion matrix must be square and non-empty, got {n} rows")
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise DataError(f"{len(names)} class names for a {n}x{n} confusion matrix")
    shown = _normalise_rows(matrix) if normalize else matrix
    side = min(max(4.0, 0.45 * n + 2.0), 16.0)
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "count")
    if n <= _LABEL_MAX_CLASSES:
        ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
    if n <= _ANNOTATE_MAX_CLASSES:
        _annotate(ax, shown, normalize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = sum(map(sum, matrix))
    correct = sum(matrix[i][i] for i in range(n))
    ax.set_title(title or f"accuracy {100.0 * correct / total if total else 0.0:.2f}% of {int(total)}")
    return _save(fig, path)


def _annotate(ax, shown: list[list[float]], normalize: bool) -> None:
    peak = max(max(row) for row in shown) or 1.0
    for i, row in enumerate(shown):
        for j, value in enumerate(row):
            if value == 0:
                continue
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            # White text on dark cells keeps contrast on the Blues colour map.
            color = "white" if value > 0.6 * peak else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)


# -- analysis figures: gradient flow, lesions, explanations -----------------------------------

def _positive_finite(values: Sequence[float]) -> tuple[list[int], list[float], list[int]]:
    """Indices and values that a log axis can show, and the indices of non-finite values
    (drawn as markers, never as zeros)."""
    keep = [(i, v) for i, v in enumerate(values) if math.isfinite(v) and v > 0]
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    return [i for i, _ in keep], [v for _, v in keep], bad


def _log_series(ax, values: Sequence[float], label: str, style: str, color: str) -> None:
    xs, ys, bad = _positive_finite(values)
    line = ax.plot(xs, ys, style, ms=2.5, lw=1.2, label=label, color=color)[0]
    if bad:
        top = max(ys) if ys else 1.0
        ax.plot(bad, [top * 3] * len(bad), "x", color=line.get_color(), ms=6,
                label=f"{label}: non-finite ({len(bad)})")


def plot_gradflow(flows: Sequence[Mapping[str, Any]], path: str | os.PathLike, *,
                  title: str | None = None) -> Path:
    """Log-scale gradient flow of several models (plain dashed, residual solid); returns ``path``.

    Each flow is a dict with ``label``, ``layers`` (rows with ``weight_grad_norm``, ``skip``,
    ``type``) and ``blocks`` (rows with ``input_grad_norm``, ``act_rms``, ``branch_skip_ratio``).
    """
    fig = _figure(13.0, 7.0)
    axes = fig.subplots(2, 2).flatten()
    panels = [("weight-gradient norm per conv layer", "layer (depth order)"),
              ("gradient norm w.r.t. block input", "block"),
              ("activation RMS of block output", "block"),
              ("residual-branch / skip output norm", "block")]
    for i, flow in enumerate(flows):
        # one colour per model in every panel; plain nets dashed
        style, color = ("--o" if "plain" in flow["label"] else "-o"), f"C{i % 10}"
        convs = [r["weight_grad_norm"] for r in flow["layers"] if not r.get("skip") and r.get("type", "conv") == "conv"]
        _log_series(axes[0], convs, flow["label"], style, color)
        _log_series(axes[1], [r["input_grad_norm"] for r in flow["blocks"]], flow["label"], style, color)
        _log_series(axes[2], [r["act_rms"] for r in flow["blocks"]], flow["label"], style, color)
        if "plain" not in flow["label"]:
            _log_series(axes[3], [r["branch_skip_ratio"] for r in flow["blocks"]], flow["label"], style, color)
    for ax, (name, xlabel) in zip(axes, panels, strict=True):
        ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, which="both")
        if ax.lines:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_lesions(studies: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Accuracy with each block removed (downsampling blocks marked) and against the number of
    blocks removed (mean and range over draws), one line per model; returns ``path``."""
    fig = _figure(12.0, 4.0)
    ax1, ax2 = fig.subplots(1, 2)
    for s in studies:
        acc = [100 * r["accuracy"] for r in s["single"]]
        line = ax1.plot(range(len(acc)), acc, "-o", ms=3, label=s["label"])[0]
        down = [r["index"] for r in s["single"] if r["downsampling"]]
        ax1.plot(down, [acc[i] for i in down], "s", mfc="none", ms=9, color=line.get_color(),
                 label=f"{s['label']}: downsampling block")
        ax1.axhline(100 * s["baseline"], color=line.get_color(), lw=0.8, ls=":")
        ks = sorted({r["k"] for r in s["multi"]})
        by_k = [[100 * r["accuracy"] for r in s["multi"] if r["k"] == k] for k in ks]
        means = [sum(v) / len(v) for v in by_k]
        ax2.errorbar([0, *ks], [100 * s["baseline"], *means], fmt="-o", ms=3, capsize=3,
                     yerr=[[0, *(m - min(v) for m, v in zip(means, by_k, strict=True))],
                           [0, *(max(v) - m for m, v in zip(means, by_k, strict=True))]],
                     label=s["label"], color=line.get_color())
    ax2.set_xticks(sorted({0, *(r["k"] for s in studies for r in s["multi"])}))  # whole blocks
    ax1.set(xlabel="removed block (index in forward order)", ylabel="accuracy (%)",
            title="one block removed (dotted: intact)")
    ax2.set(xlabel="number of random blocks removed", ylabel="accuracy (%)",
            title="k blocks removed (mean, min-max over draws)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def _show_image(ax, image) -> None:
    img = image.permute(1, 2, 0).cpu().numpy() if hasattr(image, "permute") else image
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img, vmin=0, vmax=1)
    ax.set_axis_off()


def plot_explanations(images, maps, titles: Sequence[str], path: str | os.PathLike, *,
                      ncols: int = 8, with_image: bool = True) -> Path:
    """A grid of heat-map overlays: ``images`` (N, C, H, W) in [0, 1], ``maps`` (N, H, W) in
    [0, 1]; each cell shows the image and, next to it, the overlay titled ``titles[i]``."""
    n = len(images)
    per = 2 if with_image else 1
    cols = max(1, min(ncols, n)) * per
    rows = math.ceil(n * per / cols)
    fig = _figure(1.5 * cols, 1.7 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax in axes:
        ax.set_axis_off()
    for i in range(n):
        if with_image:
            _show_image(axes[per * i], images[i])
        ax = axes[per * i + per - 1]
        _show_image(ax, images[i])
        ax.imshow(maps[i].cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(titles[i], fontsize=7)
    return _save(fig, path)


# -- comparisons: the degradation figure and the data-size sweep --------------------------------

def _band(ax, x, mean: Sequence[float], std: Sequence[float] | None, color: str) -> None:
    """A ± std band around a seed-mean curve (nothing for one seed or missing spreads)."""
    if not std or not any(math.isfinite(v) and v > 0 for v in std):
        return
    lo = [100 * (m - sd) for m, sd in zip(mean, std, strict=True)]
    hi = [100 * (m + sd) for m, sd in zip(mean, std, strict=True)]
    ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)


def plot_degradation(curves: Sequence[Mapping[str, Any]], path: str | os.PathLike, *,
                     title: str | None = None) -> Path:
    """He et al. 2015, Fig. 1/6: training error (thin) and validation error (bold) against
    epoch, one colour per depth, plain nets left and residual nets right; returns ``path``.

    Each curve is a dict with ``family`` (``plain``/``resnet``), ``depth``, ``epoch``,
    ``train_err`` and ``val_err`` (fractions, seed means; NaN where missing) and optionally
    ``train_std`` / ``val_std`` (spread over seeds), drawn as shaded ± std bands.
    """
    fig = _figure(11.0, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    depths = sorted({c["depth"] for c in curves})
    for ax, family in zip(axes, ("plain", "resnet"), strict=True):
        for c in (c for c in curves if c["family"] == family):
            color = f"C{depths.index(c['depth']) % 10}"  # same depth, same colour in both panels
            seeds = f" ({c['seeds']} seeds, ± std)" if c.get("seeds", 1) > 1 else ""
            for key, lw, kind in (("train", 0.9, "train"), ("val", 2.6, "val")):
                ax.plot(c["epoch"], [100 * v for v in c[f"{key}_err"]], lw=lw, color=color,
                        label=f"{family}-{c['depth']} {kind}{seeds}")
                _band(ax, c["epoch"], c[f"{key}_err"], c.get(f"{key}_std"), color)
        ax.set(title=f"{family} networks", xlabel="epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("error (%)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_train_sizes(points: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Final training (dashed) and validation (solid) accuracy against the number of training
    images (log axis), one colour per model: the over-fitting gap, measured; returns ``path``.

    Each point set is a dict with ``label``, ``sizes`` (None: the whole split, drawn at the
    right end), ``train_acc`` and ``val_acc`` (fractions).
    """
    fig = _figure(6.5, 4.2)
    ax = fig.subplots()
    known = [n for p in points for n in p["sizes"] if n]
    full = 2 * max(known) if known else 1  # "all" drawn right of the largest subset
    for i, p in enumerate(points):
        xs = [n or full for n in p["sizes"]]
        ax.plot(xs, [100 * v for v in p["train_acc"]], "--o", ms=3, color=f"C{i % 10}",
                label=f"{p['label']} train")
        ax.plot(xs, [100 * v for v in p["val_acc"]], "-o", ms=3, lw=2, color=f"C{i % 10}",
                label=f"{p['label']} val")
    ax.set_xscale("log")
    ax.set(xlabel="training images", ylabel="accuracy (%)",
           title="final train (dashed) and validation (solid) accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_label_efficiency(summary: Mapping[str, Sequence[Mapping[str, Any]]],
                          path: str | os.PathLike) -> Path:
    """Test accuracy against labelled images per class (log axis; ``all`` drawn at the right
    end), one panel per target, fine-tuned vs from scratch with ± std error bars over seeds;
    returns ``path``.

    ``summary`` maps a target name to rows with ``per_class`` (an int or ``"all"``),
    ``images``, ``scratch``, ``finetune`` (accuracies, fractions) and ``scratch_std``,
    ``finetune_std``.
    """
    targets = list(summary)
    fig = _figure(5.2 * max(1, len(targets)), 4.0)
    axes = fig.subplots(1, max(1, len(targets)), squeeze=False)[0]
    for ax, target in zip(axes, targets, strict=False):
        rows = list(summary[target])
        known = [int(r["per_class"]) for r in rows if str(r["per_class"]) != "all"]
        per_class_all = max(1, round(rows[-1]["images"] / max(1, _classes(rows)))) if rows else 1
        xs = [int(r["per_class"]) if str(r["per_class"]) != "all" else
              max(per_class_all, 2 * max(known, default=1)) for r in rows]
        for arm, style in (("finetune", "o-"), ("scratch", "s--")):
            ax.errorbar(xs, [100 * r[arm] for r in rows], yerr=[100 * r[f"{arm}_std"] for r in rows],
                        fmt=style, capsize=3, label="fine-tuned" if arm == "finetune" else "from scratch")
        ax.set_xscale("log")
        ax.set_xticks(xs, [str(r["per_class"]) for r in rows])
        ax.set(title=target, xlabel="labelled images per class", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _classes(rows: Sequence[Mapping[str, Any]]) -> int:
    """Classes of a label-efficiency target, from a row with an integer ``per_class``."""
    for r in rows:
        if str(r["per_class"]) != "all" and int(r["per_class"]) > 0:
            return max(1, round(r["images"] / int(r["per_class"])))
    return 1


def plot_sweep_history(trials: Sequence[Mapping[str, Any]], path: str | os.PathLike, *,
                       metric: str, maximize: bool) -> Path:
    """Optimisation history: each finished trial's value against its number (pruned trials
    hollow) and the best so far as a step line; returns ``path``.  ``trials``: dicts with
    ``number``, ``state`` and ``value``."""
    fig = _figure(6.5, 3.8)
    ax = fig.subplots()
    done = [t for t in trials if t.get("value") is not None and math.isfinite(t["value"])]
    for state, style in (("COMPLETE", "o"), ("PRUNED", "o")):
        pts = [t for t in done if t["state"] == state]
        ax.plot([t["number"] for t in pts], [t["value"] for t in pts], style, ms=5,
                mfc="none" if state == "PRUNED" else None, color="C0", lw=0,
                label=state.lower())
    best, xs, ys = None, [], []
    for t in sorted((t for t in done if t["state"] == "COMPLETE"), key=lambda t: t["number"]):
        if best is None or (t["value"] > best if maximize else t["value"] < best):
            best = t["value"]
        xs.append(t["number"])
        ys.append(best)
    if xs:  # the best-so-far line runs on to the last trial
        xs.append(max(t["number"] for t in trials))
        ys.append(ys[-1])
    ax.step(xs, ys, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title="optimisation history")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_importances(importances: Mapping[str, float], path: str | os.PathLike) -> Path:
    """Parameter importance (Optuna's fANOVA, fractions summing to 1) as horizontal bars."""
    fig = _figure(6.5, 0.6 + 0.45 * max(1, len(importances)))
    ax = fig.subplots()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="C0")
    ax.set(xlabel="importance (fANOVA)", title="parameter importance", xlim=(0, 1))
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def plot_sweep_slices(trials: Sequence[Mapping[str, Any]], params: Mapping[str, str],
                      path: str | os.PathLike, *, metric: str) -> Path:
    """One panel per searched parameter: the trial values against that parameter (log axis
    for log-scale ranges, categories as they come).  ``params``: key -> kind."""
    keys = list(params)
    cols = min(3, max(1, len(keys)))
    rows = math.ceil(len(keys) / cols) or 1
    fig = _figure(3.3 * cols, 2.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    done = [t for t in trials if t.get("value") is not None and math.isfinite(t["value"])]
    for ax, key in zip(axes, keys, strict=False):
        pts = [(t["params"][key], t["value"]) for t in done if key in t.get("params", {})]
        if params[key] == "choice":
            labels = sorted({str(x) for x, _ in pts})
            ax.plot([labels.index(str(x)) for x, _ in pts], [v for _, v in pts], "o", ms=4)
            ax.set_xticks(range(len(labels)), labels, fontsize=7)
        else:
            ax.plot([x for x, _ in pts], [v for _, v in pts], "o", ms=4)
            if "log" in params[key]:
                ax.set_xscale("log")
        ax.set(xlabel=key, ylabel=metric)
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    return _save(fig, path)
