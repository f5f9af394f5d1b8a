"""MLP-ResNet vs its plain twin vs scikit-learn on the tables that ship with scikit-learn.

For each classification table (breast cancer, wine, digits as 64 features) one stratified
80/20 split (``random_state=0``) is written as train/test CSV files; then, on the same rows:

* ``mlp_resnet`` and ``plain_mlp`` trained through ``resnetlab.run.train`` (table-sized
  defaults; the run holds out 10% of the training file for validation) and scored with
  ``resnetlab.run.evaluate`` on the test CSV (the run's target column and statistics);
* a standardised logistic regression and ``HistGradientBoostingClassifier`` (scikit-learn
  defaults) fitted on the whole training file.

It prints test accuracy per model and the MLP-ResNet's difference to the logistic baseline
measured in the same run.  Regression tables (diabetes) are scored for the scikit-learn
baselines only: the run API trains classifiers.  Needs the ``tables`` extra (scikit-learn).
Usage::

    python benchmarks/tables.py [--epochs 30] [--seeds 1] [--out /tmp/resnetlab-tables]
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import numpy as np
import torch

from resnetlab import run

TABLES = ("breast_cancer", "wine", "digits")


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([f"f{j}" for j in range(x.shape[1])] + ["target"])
        out.writerows([*map(repr, map(float, row)), str(int(label))] for row, label in zip(x, y, strict=True))
    return path


def split(name: str, out: Path):
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    out.mkdir(parents=True, exist_ok=True)
    return (write_csv(out / "train.csv", xtr, ytr), write_csv(out / "test.csv", xte, yte),
            (xtr, ytr, xte, yte))


def sklearn_scores(xtr, ytr, xte, yte) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    boosted = HistGradientBoostingClassifier(random_state=0)
    return {"logistic": logistic.fit(xtr, ytr).score(xte, yte),
            "hist_gb": boosted.fit(xtr, ytr).score(xte, yte)}


def regression_baselines() -> dict[str, float]:
    """R2 of ridge and HistGradientBoosting on diabetes (same 80/20 split rule)."""
    from sklearn import datasets
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = datasets.load_diabetes(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0)
    ridge = make_pipeline(StandardScaler(), RidgeCV()).fit(xtr, ytr)
    boosted = HistGradientBoostingRegressor(random_state=0).fit(xtr, ytr)
    return {"ridge": ridge.score(xte, yte), "hist_gb": boosted.score(xte, yte)}


def net_score(model: str, train_csv: Path, test_csv: Path, runs: Path, epochs: int,
              seed: int) -> float:
    cfg = run.load_recipe("default")
    cfg.model.name, cfg.data.name, cfg.data.target = model, f"csv:{train_csv}", "target"
    cfg.data.batch_size, cfg.optim.lr = 32, 0.05
    cfg.train.epochs, cfg.train.seed, cfg.train.tta = epochs, seed, False
    cfg.train.device, cfg.train.precision = "cpu", "fp32"
    cfg.runs_dir, cfg.name = str(runs), f"{train_csv.parent.name}-{model}-s{seed}"
    done = run.train(cfg, progress=False)
    report, _ = run.evaluate(done, data=f"csv:{test_csv}", device="cpu")
    return report.top1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/resnetlab-tables"))
    ap.add_argument("--tables", default=",".join(TABLES))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # the shared 2-core machine: no oversubscription
    rows = []
    for name in args.tables.split(","):
        train_csv, test_csv, arrays = split(name, args.out / name)
        scores = sklearn_scores(*arrays)
        for model in ("mlp_resnet", "plain_mlp"):
            accs = [net_score(model, train_csv, test_csv, args.out / "runs", args.epochs, s)
                    for s in range(args.seeds)]
            scores[model] = statistics.mean(accs)
        rows.append((name, len(arrays[1]), len(arrays[3]), scores))
        print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)
    print("\n| table | train / test rows | MLP-ResNet | plain MLP | logistic | HistGB | "
          "MLP-ResNet - logistic |\n|---|---|---|---|---|---|---|")
    for name, ntr, nte, s in rows:
        print(f"| {name} | {ntr} / {nte} | {s['mlp_resnet']:.2%} | {s['plain_mlp']:.2%} | "
              f"{s['logistic']:.2%} | {s['hist_gb']:.2%} | "
              f"{100 * (s['mlp_resnet'] - s['logistic']):+.1f} pts |")
    reg = regression_baselines()
    print(f"\ndiabetes (regression, test R2): ridge {reg['ridge']:.3f}, HistGB {reg['hist_gb']:.3f}"
          "; MLP-ResNet regression is not in the run API yet")


if __name__ == "__main__":
    main()
