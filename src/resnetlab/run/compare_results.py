"""What a comparison found: per-member numbers, the table over seeds, the findings in words,
and the files (``comparison.json``, ``table.csv``, ``report.md``, figures, ``report.html``).

Every sentence is computed from the numbers (which net ends higher, by how much, in how many
seeds); nothing here asserts what the paper found.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

import torch

from resnetlab.analysis.plots import plot_degradation, plot_train_sizes, read_metrics
from resnetlab.analysis.report import write_report
from resnetlab.checkpoint import read_meta
from resnetlab.models import create_model
from resnetlab.models.summary import count_parameters

__all__ = ["FAMILIES", "member_record", "summary_rows", "degradation_findings", "size_points",
           "size_findings", "mean_curves", "write_artefacts"]

FAMILIES = ("plain", "resnet")  # registry prefixes: plain20 is resnet20 without its skips
# the dense-block sweep: family -> model, whose depth is its num_blocks argument
DENSE_MODELS = {"plain": "plain_mlp", "resnet": "mlp_resnet"}
# what "final train error" is (He et al. 2015, Fig. 1 thin curves: the training error as the
# epoch ran, with augmentation and dropout on, not a re-evaluation of the final weights)
TRAIN_ERROR_NOTE = ("\"final train error\" is the running training error over the last epoch "
                    "(the top-1 error of the training batches as they were trained on, "
                    "augmented, as in the paper's thin curves), not a re-evaluation of the "
                    "final weights on the training set.")
COLUMNS = ["train images", "depth", "family", "params", "final train error", "best val error",
           "test error", "time (s)", "seeds"]


def member_record(run: Any) -> dict[str, Any]:
    """The numbers of one finished member run (a :class:`~resnetlab.run.Run`)."""
    cfg, res = run.config, run.results or {}
    family, depth = _family_depth(cfg)
    # one row per epoch: a member killed between its epoch row and its checkpoint repeats the
    # epoch on resume, and the repeat is what the final weights saw
    by_epoch = {r["epoch"]: r for r in read_metrics(run.run_dir / "metrics.csv") if _finite(r.get("epoch"))}
    rows = [by_epoch[e] for e in sorted(by_epoch)]
    err = [1 - r["train_top1"] for r in rows]
    val = [1 - r["val_top1"] for r in rows if _finite(r.get("val_top1"))]
    return {
        "name": run.run_dir.name, "run_dir": str(run.run_dir), "family": family,
        "depth": depth, "seed": cfg.train.seed,
        "train_size": cfg.data.train_size, "params": _params(run),
        "final_train_err": err[-1] if err else math.nan,
        "final_val_err": val[-1] if val else math.nan,
        "best_val_err": min(val) if val else math.nan,
        "test_err": 1 - res["top1"] if _finite(res.get("top1")) else math.nan,
        "time_s": res.get("train_time_s") or math.nan,
        "curve": {"epoch": [r["epoch"] for r in rows], "train_err": err,
                  "val_err": [1 - r["val_top1"] if _finite(r.get("val_top1")) else math.nan for r in rows]},
    }


def _family_depth(cfg: Any) -> tuple[str, int]:
    """``resnet20`` -> ``("resnet", 20)``; ``plain_mlp`` with 8 blocks -> ``("plain", 8)``."""
    dense = {model: family for family, model in DENSE_MODELS.items()}
    if cfg.model.name in dense:
        return dense[cfg.model.name], int(cfg.model.kwargs["num_blocks"])
    family = next(f for f in FAMILIES if cfg.model.name.startswith(f))
    return family, int(cfg.model.name[len(family):])


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _params(run: Any) -> int:
    """Parameters of the member's network, counted on the meta device (no memory, no init)."""
    args = dict(read_meta(run.best or run.last).get("model") or {})
    with torch.device("meta"):
        return count_parameters(create_model(args.pop("name"), **args))


def _groups(records: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Members grouped by (train size, depth, family), in the plan's order."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault((r["train_size"], r["depth"], r["family"]), []).append(r)
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if _finite(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def _pm(values: list[float], percent: bool = True) -> str:
    """``4.10 ± 0.20%`` over seeds (just ``4.10%`` for one seed)."""
    mean, std = _mean_std(values)
    if not _finite(mean):
        return "-"
    scale, unit, digits = (100, "%", 2) if percent else (1, "", 0)
    text = f"{scale * mean:.{digits}f}"
    return (f"{text} ± {scale * std:.{digits}f}" if len(values) > 1 else text) + unit


def summary_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (train size, depth, family): mean ± std over seeds, as text and numbers."""
    rows = []
    for (size, depth, family), group in _groups(records).items():
        rows.append({
            "train images": f"{size:,}" if size else "all", "depth": depth, "family": family,
            "params": f"{group[0]['params']:,}",
            "final train error": _pm([g["final_train_err"] for g in group]),
            "best val error": _pm([g["best_val_err"] for g in group]),
            "test error": _pm([g["test_err"] for g in group]),
            "time (s)": _pm([g["time_s"] for g in group], percent=False),
            "seeds": len(group),
            "mean_train_err": _mean_std([g["final_train_err"] for g in group])[0],
        })
    return rows


def _label(family: str, depth: int) -> str:
    return f"{family}-{depth}"


def _compare_pair(at: list[dict[str, Any]], family: str, shallow: int, deep: int, key: str):
    """Mean ``key`` of the shallow and deep net over all their seeds (the table's means), and in
    how many shared seeds the deep net's value is higher: ``(shallow, deep, higher, shared)``."""
    by = {(r["depth"], r["seed"]): r[key] for r in at if r["family"] == family}
    seeds = sorted({s for d, s in by if d == shallow} & {s for d, s in by if d == deep})
    if not seeds:
        return None
    higher = sum(by[deep, s] > by[shallow, s] for s in seeds)
    means = [_mean_std([v for (d, _), v in by.items() if d == depth])[0] for depth in (shallow, deep)]
    return means[0], means[1], higher, len(seeds)


def _ends_with(b: str, d: float, a: str, s: float, what: str = "training error") -> str:
    """``plain-56 ends with a higher training error (4.10%) than plain-20 (2.90%)`` (means)."""
    if d == s:
        return f"{b} ends with the same {what} ({100 * d:.2f}%) as {a} ({100 * s:.2f}%)"
    return f"{b} ends with a {'higher' if d > s else 'lower'} {what} ({100 * d:.2f}%) than {a} ({100 * s:.2f}%)"


def _seed_note(count: int, n: int, what: str) -> str:
    return f" ({what} in {count} of {n} seeds)" if n > 1 else ""


def _seeds_clause(higher: int, n: int) -> str:
    """How far the seeds back a mean that went up: ``in every seed`` / ``in 1 of 2 seeds``."""
    if n == 1:
        return ""
    return " in every seed" if higher == n else f" on the means, but in only {higher} of {n} seeds"


def _residual_clause(residual, shallow: int, deep: int) -> str:
    """The residual pair in a few words, for the plain verdict to contrast or concede."""
    if not residual:
        return ""
    s, d, higher, n = residual
    a, b = _label("resnet", shallow), _label("resnet", deep)
    word = "worse on average than" if d > s else "better on average than" if d < s else "as well on average as"
    return (f"{b} trains {word} {a} ({100 * d:.2f}% vs {100 * s:.2f}%"
            f"{f', higher in {higher} of {n} seeds' if n > 1 else ''})")


def _plain_sentence(pair, shallow: int, deep: int, where: str, residual) -> tuple[str, bool]:
    """The degradation verdict (He et al. 2015, Fig. 1): the deeper plain net ends with a higher
    mean training error while the deeper residual net's mean does not rise.  Both are judged on
    the means (the table's numbers) and the sentence says how many seeds agree; when the
    residual net's mean rises too, depth merely slows training at this budget.  Returns the
    sentence and whether degradation was shown on the means."""
    s, d, higher, n = pair
    a, b = _label("plain", shallow), _label("plain", deep)
    res_clause = _residual_clause(residual, shallow, deep)
    if d > s and residual and residual[1] > residual[0]:
        verdict = (f"degradation not shown, because {res_clause} too: at this budget depth "
                   "slows both families")
    elif d > s:
        verdict = f"degradation reproduced{_seeds_clause(higher, n)}"
        verdict += f", while {res_clause}" if res_clause else ""
    else:
        verdict = "degradation not reproduced at this budget"
    shown = d > s and not (residual and residual[1] > residual[0])
    return f"{_ends_with(b, d, a, s)}{_seed_note(higher, n, 'higher')}{where}: {verdict}", shown


def _resnet_sentence(pair, shallow: int, deep: int, where: str) -> str:
    """The other half of the claim: with skips, the deeper net trains at least as well (on the
    means; the seed count says how many seeds agree)."""
    s, d, higher, n = pair
    a, b = _label("resnet", shallow), _label("resnet", deep)
    if d <= s:
        verdict = "the residual net does not degrade with depth" + (" on the means" if higher else "")
    elif higher == n:
        verdict = "the residual net also trains worse when deeper at this budget"
    else:
        verdict = (f"the residual net trains worse when deeper on the means, in only {higher} "
                   f"of {n} seeds: not a reliable difference")
    return f"{_ends_with(b, d, a, s)}{_seed_note(higher, n, 'higher')}{where}: {verdict}"


def _overfit_sentence(pair, shallow: int, deep: int) -> str:
    """Degradation is not over-fitting: an over-fitting deep net would train *better* and
    validate worse; a degraded one is worse on both (He et al. 2015, sec. 1)."""
    s, d, _, _ = pair
    a, b = _label("plain", shallow), _label("plain", deep)
    if d >= s:
        return (f"{b}'s best validation error is also {'higher' if d > s else 'as high'} ({100 * d:.2f}% "
                f"vs {100 * s:.2f}% for {a}): it is worse on its own training data too, so this is "
                "not over-fitting")
    return (f"{b}'s best validation error is lower ({100 * d:.2f}% vs {100 * s:.2f}% for {a}) "
            "although it trains worse: the deeper plain net generalises better at this budget")


def _where(size: int | None) -> str:
    return f" with {size:,} training images" if size else ""


def degradation_findings(records: list[dict[str, Any]]) -> list[str]:
    """Plain and residual sentences for each pair of consecutive depths and each data size."""
    out: list[str] = []
    for size in dict.fromkeys(r["train_size"] for r in records):
        at = [r for r in records if r["train_size"] == size]
        depths = sorted({r["depth"] for r in at})
        for shallow, deep in zip(depths, depths[1:], strict=False):
            plain = _compare_pair(at, "plain", shallow, deep, "final_train_err")
            residual = _compare_pair(at, "resnet", shallow, deep, "final_train_err")
            if plain:
                sentence, degraded = _plain_sentence(plain, shallow, deep, _where(size), residual)
                out.append(sentence)
                val = _compare_pair(at, "plain", shallow, deep, "best_val_err")
                if degraded and val:
                    out.append(_overfit_sentence(val, shallow, deep))
            if residual:
                out.append(_resnet_sentence(residual, shallow, deep, _where(size)))
    return out


def size_points(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model: final train and validation accuracy (mean over seeds) at each data size."""
    models: dict[tuple, dict[Any, list]] = {}
    for r in records:
        models.setdefault((r["family"], r["depth"]), {}).setdefault(r["train_size"], []).append(r)
    points = []
    for (family, depth), by_size in models.items():
        sizes = sorted(by_size, key=lambda n: math.inf if n is None else n)
        points.append({
            "label": _label(family, depth), "sizes": sizes,
            "train_acc": [1 - _mean_std([r["final_train_err"] for r in by_size[n]])[0] for n in sizes],
            "val_acc": [1 - _mean_std([r["final_val_err"] for r in by_size[n]])[0] for n in sizes],
        })
    return points


def size_findings(points: list[dict[str, Any]], full_size: int | None) -> list[str]:
    """How the train-validation gap (over-fitting) moves from the smallest to the largest set."""
    out = []
    for p in points:
        if len(p["sizes"]) < 2:
            continue
        gaps = [100 * (t - v) for t, v in zip(p["train_acc"], p["val_acc"], strict=True)]
        lo, hi = (f"{n:,}" if n else f"all {full_size:,}" if full_size else "all" for n in
                  (p["sizes"][0], p["sizes"][-1]))
        trend = "shrinks" if gaps[-1] < gaps[0] else "does not shrink"
        out.append(f"{p['label']}: final training accuracy exceeds validation accuracy by "
                   f"{gaps[0]:.1f} points with {lo} training images and by {gaps[-1]:.1f} with "
                   f"{hi}: the over-fitting gap {trend} with more data")
    return out


def mean_curves(records: list[dict[str, Any]], size: int | None) -> list[dict[str, Any]]:
    """Per (family, depth): training and validation error per epoch, mean and std over seeds."""
    curves = []
    for (n, depth, family), group in _groups(records).items():
        if n != size:
            continue
        length = min(len(g["curve"]["epoch"]) for g in group)
        curve = {"family": family, "depth": depth, "seeds": len(group),
                 "epoch": group[0]["curve"]["epoch"][:length]}
        for key in ("train_err", "val_err"):
            stats = [_mean_std([g["curve"][key][i] for g in group]) for i in range(length)]
            curve[key] = [m for m, _ in stats]
            curve[key.replace("err", "std")] = [sd for _, sd in stats]
        curves.append(curve)
    return curves


def _figures(out_dir: Path, records: list[dict[str, Any]], points) -> list[tuple[str, str]]:
    """The paper's figure per data size, and accuracy against data size when there are several."""
    sizes = list(dict.fromkeys(r["train_size"] for r in records))
    figures = []
    for size in sizes:
        name = "degradation.png" if len(sizes) == 1 else f"degradation-n{size or 'all'}.png"
        title = ("running training error over each epoch (thin) and validation error (bold), "
                 "mean ± std over seeds" + _where(size))
        plot_degradation(mean_curves(records, size), out_dir / name, title=title)
        figures.append((name, title))
    if len(sizes) > 1:
        plot_train_sizes(points, out_dir / "train_sizes.png")
        figures.append(("train_sizes.png", "final training and validation accuracy against data size"))
    return figures


def _markdown(title: str, lines: list[str], rows, figures, records) -> str:
    table = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    table += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    parts = [f"# {title}", "", "## Findings", "", *(f"- {line}" for line in lines), "",
             "## Results (mean ± std over seeds)", "", TRAIN_ERROR_NOTE, "", *table, "", "## Figures", ""]
    parts += [f"![{t}]({name})" for name, t in figures]
    parts += ["", "## Member runs (ordinary run directories: `resnetlab eval DIR` works)", ""]
    parts += [f"- `runs/{r['name']}`" for r in records]
    return "\n".join(parts) + "\n"


def write_artefacts(out_dir: Path, plan: Any, records: list[dict[str, Any]]):
    """Write every file of the comparison from the members finished so far; returns the table
    rows, the findings and the files written."""
    rows = summary_rows(records)
    points = size_points(records)
    full = _full_size(records)
    lines = degradation_findings(records) + size_findings(points, full)
    if not lines:
        lines = ["not enough finished members yet to compare depths (each family needs two depths)"]
    figures = _figures(out_dir, records, points)
    seeds = sorted({r["seed"] for r in records})
    title = (f"plain vs residual at depths {', '.join(map(str, plan.depths))}: "
             f"{len(records)} of {plan.count()} members, seeds {', '.join(map(str, seeds))}")
    with (out_dir / "table.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "report.md").write_text(_markdown(title, lines, rows, figures, records))
    summary = {"title": title, "findings": lines, "notes": [TRAIN_ERROR_NOTE], "columns": COLUMNS,
               "rows": [[str(r[c]) for c in COLUMNS] for r in rows], "figures": figures,
               "members": [{k: v for k, v in r.items() if k != "curve"} for r in records],
               "plan": dict(plan.__dict__)}
    (out_dir / "comparison.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    html = write_report(out_dir)
    files = {"table": out_dir / "table.csv", "markdown": out_dir / "report.md", "html": html,
             "json": out_dir / "comparison.json", **{n: out_dir / n for n, _ in figures}}
    return rows, lines, files


def _full_size(records: list[dict[str, Any]]) -> int | None:
    """How many images "all" was (read off a member that used the whole training split)."""
    for r in records:
        if r["train_size"] is None:
            split = (json.loads((Path(r["run_dir"]) / "results.json").read_text()).get("data_split") or {})
            return split.get("num_train")
    return None
