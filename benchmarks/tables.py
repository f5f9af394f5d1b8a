"""MLP-ResNet vs its plain twin vs scikit-learn on the tables that ship with scikit-learn.

For each classification table (breast cancer, wine, digits as 64 features) one stratified
80/20 split (``random_state=0``) is written as train/test CSV files; then, on the same rows:

* ``mlp_resnet`` and ``plain_mlp`` trained through ``resnetlab.run.train`` (table-sized
  defaults; the run holds out 10% of the training file for validation) and scored with
  ``resnetlab.run.evaluate`` on the test CSV (the run's target column and statistics);
* a standardised logistic regression and ``HistGradientBoostingClassifier`` (scikit-learn
  defaults) fitted on the whole training file.

It prints test accuracy per model and the MLP-ResNet's difference to the logistic baseline
measured in the same run.  The regression table (diabetes; California housing is not bundled
with scikit-learn, it is a download, so it is left out) gets one 80/20 split; the networks
train with MSE on the standardised target (AdamW, lr 0.003, weight decay 0.01: SGD at the
classification lr diverges on it) and are scored by test R^2 and RMSE against a standardised
ridge regression (``RidgeCV``) and ``HistGradientBoostingRegressor``.  Needs the ``tables``
extra (scikit-learn).  Usage::

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


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, label=lambda v: str(int(v))) -> Path:
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([f"f{j}" for j in range(x.shape[1])] + ["target"])
        out.writerows([*map(repr, map(float, row)), label(t)] for row, t in zip(x, y, strict=True))
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


def _float(v) -> str:
    return repr(float(v))


def regression_split(out: Path):
    """Diabetes, one 80/20 split (``random_state=0``), as train/test CSVs and arrays."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    x, y = datasets.load_diabetes(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0)
    out.mkdir(parents=True, exist_ok=True)
    return (write_csv(out / "train.csv", xtr, ytr, _float), write_csv(out / "test.csv", xte, yte, _float),
            (xtr, ytr, xte, yte))


def regression_baselines(xtr, ytr, xte, yte) -> dict[str, tuple[float, float]]:
    """(test R2, test RMSE) of a standardised ridge and of HistGradientBoosting."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {}
    for name, est in (("ridge", make_pipeline(StandardScaler(), RidgeCV())),
                      ("hist_gb", HistGradientBoostingRegressor(random_state=0))):
        pred = est.fit(xtr, ytr).predict(xte)
        out[name] = (est.score(xte, yte), float(np.sqrt(np.mean((pred - yte) ** 2))))
    return out


def net_score(model: str, train_csv: Path, test_csv: Path, runs: Path, epochs: int,
              seed: int, regression: bool = False) -> float | tuple[float, float]:
    """Test accuracy (classification) or (test R2, test RMSE) of one trained network."""
    cfg = run.load_recipe("default")
    cfg.model.name, cfg.data.name, cfg.data.target = model, f"csv:{train_csv}", "target"
    cfg.data.batch_size, cfg.optim.lr = 32, 0.05
    if regression:  # MSE on the standardised target; SGD at lr 0.05 diverges in epoch 2 here
        cfg.data.task = "regression"
        cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay = "adamw", 0.003, 0.01
    cfg.train.epochs, cfg.train.seed, cfg.train.tta = epochs, seed, False
    cfg.train.device, cfg.train.precision = "cpu", "fp32"
    cfg.runs_dir, cfg.name = str(runs), f"{train_csv.parent.name}-{model}-s{seed}"
    done = run.train(cfg, progress=False)
    report, _ = run.evaluate(done, data=f"csv:{test_csv}", device="cpu")
    return (report.r2, report.rmse) if regression else report.top1


def regression_row(args: argparse.Namespace) -> None:
    """Diabetes: networks vs ridge and HistGB on the same split; prints a README row."""
    train_csv, test_csv, arrays = regression_split(args.out / "diabetes")
    scores = regression_baselines(*arrays)
    for model in ("mlp_resnet", "plain_mlp"):
        runs = [net_score(model, train_csv, test_csv, args.out / "runs", args.epochs, s, True)
                for s in range(args.seeds)]
        scores[model] = tuple(statistics.mean(v) for v in zip(*runs, strict=True))
    cells = " | ".join(f"R2 {scores[k][0]:.3f} (RMSE {scores[k][1]:.1f})"
                       for k in ("mlp_resnet", "plain_mlp", "ridge", "hist_gb"))
    print("\n| table | train / test rows | MLP-ResNet | plain MLP | ridge | HistGB |\n"
          f"|---|---|---|---|---|---|\n| diabetes (10) | {len(arrays[1])} / {len(arrays[3])} | "
          f"{cells} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/resnetlab-tables"))
    ap.add_argument("--tables", default=",".join(TABLES + ("diabetes",)))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # the shared 2-core machine: no oversubscription
    rows = []
    names = args.tables.split(",")
    for name in (n for n in names if n != "diabetes"):
        train_csv, test_csv, arrays = split(name, args.out / name)
        scores = sklearn_scores(*arrays)
        for model in ("mlp_resnet", "plain_mlp"):
            accs = [net_score(model, train_csv, test_csv, args.out / "runs", args.epochs, s)
                    for s in range(args.seeds)]
            scores[model] = statistics.mean(accs)
        rows.append((name, len(arrays[1]), len(arrays[3]), scores))
        print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)
    if rows:
        print("\n| table | train / test rows | MLP-ResNet | plain MLP | logistic | HistGB | "
              "MLP-ResNet - logistic |\n|---|---|---|---|---|---|---|")
    for name, ntr, nte, s in rows:
        print(f"| {name} | {ntr} / {nte} | {s['mlp_resnet']:.2%} | {s['plain_mlp']:.2%} | "
              f"{s['logistic']:.2%} | {s['hist_gb']:.2%} | "
              f"{100 * (s['mlp_resnet'] - s['logistic']):+.1f} pts |")
    if "diabetes" in names:
        regression_row(args)


if __name__ == "__main__":
    main()
