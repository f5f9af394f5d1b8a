"""MLP-ResNet vs logistic/ridge regression vs HistGradientBoosting on every table scikit-learn
ships offline (breast cancer, wine, iris, digits as 64 features, diabetes), 5-fold
cross-validation, mean ± std over the folds (issue 23).

Each fold (``StratifiedKFold``/``KFold``, shuffled, ``random_state=0``) is written as
train/test CSVs; on the same rows:

* the MLP-ResNet trained through ``resnetlab.run.train`` (the run holds out 10% of the training
  file for validation and keeps the best-on-validation checkpoint) and scored with
  ``resnetlab.run.evaluate`` on the test CSV, once per variant in ``--variants``: only knobs a
  user has (``VARIANTS``: the table-sized defaults of ``resnetlab.models.mlp.table_defaults``,
  weight decay, early stopping on validation; features are always standardised by the table
  reader);
* a standardised logistic regression (``RidgeCV`` for regression) and
  ``HistGradientBoosting`` (scikit-learn defaults) fitted on the whole training file.

Classification is scored by accuracy, regression (diabetes) by R^2.  The networks use the
default recipe with batch 32 and lr 0.05 (classification) or AdamW lr 0.003 on the
standardised target (regression: SGD at lr 0.05 diverges), ``--epochs`` epochs.  Printed:
one markdown table, and per table the MLP-ResNet's best variant minus the best baseline.
Usage::

    python benchmarks/tables.py [--epochs 30] [--folds 5] [--variants defaults,tuned]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from resnetlab import run

TABLES = ("breast_cancer", "wine", "iris", "digits", "diabetes")
REGRESSION = {"diabetes"}
# name -> (description, config overrides): what a user can set with flags or --set
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "defaults": ("table defaults", {}),
    "wd": ("weight decay 5e-3", {"optim.weight_decay": 5e-3}),
    "es": ("early stop (patience 5)", {"train.early_stop_patience": 5}),
    "tuned": ("weight decay 5e-3 + early stop", {"optim.weight_decay": 5e-3,
                                                 "train.early_stop_patience": 5}),
}


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, label=lambda v: str(int(v))) -> Path:
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([f"f{j}" for j in range(x.shape[1])] + ["target"])
        out.writerows([*map(repr, map(float, row)), label(t)] for row, t in zip(x, y, strict=True))
    return path


def split(name: str, out: Path):
    """One stratified 80/20 split (``random_state=0``) as CSVs (``mlp_depth.py`` uses it)."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    out.mkdir(parents=True, exist_ok=True)
    return (write_csv(out / "train.csv", xtr, ytr), write_csv(out / "test.csv", xte, yte),
            (xtr, ytr, xte, yte))


def folds(name: str, k: int, out: Path):
    """``k`` shuffled (stratified for classes) folds as (train CSV, test CSV, arrays)."""
    from sklearn import datasets
    from sklearn.model_selection import KFold, StratifiedKFold

    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    regression = name in REGRESSION
    cv = (KFold if regression else StratifiedKFold)(k, shuffle=True, random_state=0)
    label = (lambda v: repr(float(v))) if regression else (lambda v: str(int(v)))
    for i, (tr, te) in enumerate(cv.split(x, y)):
        where = out / name / f"fold{i}"
        where.mkdir(parents=True, exist_ok=True)
        yield (write_csv(where / "train.csv", x[tr], y[tr], label),
               write_csv(where / "test.csv", x[te], y[te], label), (x[tr], y[tr], x[te], y[te]))


def baselines(name: str, xtr, ytr, xte, yte) -> dict[str, float]:
    """Test accuracy (R^2 for regression) of the linear model and of HistGB."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name in REGRESSION:
        linear = make_pipeline(StandardScaler(), RidgeCV())
        boosted = HistGradientBoostingRegressor(random_state=0)
    else:
        linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        boosted = HistGradientBoostingClassifier(random_state=0)
    return {"linear": linear.fit(xtr, ytr).score(xte, yte),
            "hist_gb": boosted.fit(xtr, ytr).score(xte, yte)}


def net_score(name: str, variant: str, csvs: tuple[Path, Path], runs: Path, fold: int,
              args: argparse.Namespace) -> float:
    """Test accuracy (R^2 for regression) of one MLP-ResNet trained through the run API."""
    cfg = run.load_recipe("default")
    cfg.model.name, cfg.data.name, cfg.data.target = "mlp_resnet", f"csv:{csvs[0]}", "target"
    cfg.data.batch_size, cfg.optim.lr = 32, 0.05
    if name in REGRESSION:  # MSE on the standardised target; SGD at lr 0.05 diverges in epoch 2
        cfg.data.task = "regression"
        cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay = "adamw", 0.003, 0.01
    cfg.train.epochs, cfg.train.seed, cfg.train.tta = args.epochs, 0, False
    cfg.train.time_budget = None  # these epochs, not the main job's 5 minutes
    cfg.train.device, cfg.train.precision = "cpu", "fp32"
    for key, value in VARIANTS[variant][1].items():
        section, field = key.split(".")
        if name in REGRESSION and key == "optim.weight_decay":
            value = 10 * float(value)  # AdamW's decoupled decay: 10x SGD's L2 at this lr
        setattr(getattr(cfg, section), field, value)
    cfg.runs_dir, cfg.name = str(runs), f"{name}-f{fold}-{variant}"
    done = run.train(cfg, progress=False)
    report, _ = run.evaluate(done, data=f"csv:{csvs[1]}", device="cpu")
    return report.r2 if name in REGRESSION else report.top1


def _cell(values: list[float], regression: bool) -> str:
    mean, std = statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {std:.3f}" if regression else f"{100 * mean:.2f} ± {100 * std:.2f}%"


def table_row(name: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Scores of every model on every fold of one table."""
    scores: dict[str, list[float]] = {}
    for fold, (train_csv, test_csv, arrays) in enumerate(folds(name, args.folds, args.out)):
        for model, value in baselines(name, *arrays).items():
            scores.setdefault(model, []).append(value)
        for variant in args.variants.split(","):
            value = net_score(name, variant, (train_csv, test_csv), args.out / "runs", fold, args)
            scores.setdefault(variant, []).append(value)
        print(f"{name} fold {fold}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in scores.items()),
              flush=True)
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--variants", default="defaults,tuned", help=", ".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=Path("/tmp/resnetlab-tables"))
    ap.add_argument("--tables", default=",".join(TABLES))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # the shared 2-core machine: no oversubscription
    start, variants = time.perf_counter(), args.variants.split(",")
    results = {name: table_row(name, args) for name in args.tables.split(",")}
    head = [f"MLP-ResNet, {VARIANTS[v][0]}" for v in variants]
    print(f"\n{args.folds}-fold CV, mean ± std over folds (accuracy; diabetes: R^2)\n")
    print("| table | rows x features | " + " | ".join(head) + " | logistic / ridge | HistGB | "
          "best MLP-ResNet - best baseline |\n|" + "---|" * (len(head) + 5))
    for name, s in results.items():
        reg = name in REGRESSION
        from sklearn import datasets

        x, _ = getattr(datasets, f"load_{name}")(return_X_y=True)
        best_net = max(statistics.fmean(s[v]) for v in variants)
        best_base = max(statistics.fmean(s[b]) for b in ("linear", "hist_gb"))
        gap = f"{best_net - best_base:+.3f}" if reg else f"{100 * (best_net - best_base):+.2f} pts"
        print(f"| {name} | {x.shape[0]} x {x.shape[1]} | "
              + " | ".join(_cell(s[v], reg) for v in variants)
              + f" | {_cell(s['linear'], reg)} | {_cell(s['hist_gb'], reg)} | {gap} |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
