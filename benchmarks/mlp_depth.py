"""Depth on a table: the MLP-ResNet vs its plain twin at 2, 8 and 32 blocks (issue 23).

One stratified 80/20 split (``random_state=0``) of a scikit-learn table (digits by default:
1797 rows, 64 features) is written as train/test CSVs; each network trains through
``resnetlab.run.train`` with the same recipe, length and seed for both families (the run holds
out 10% of the training file for validation), and is scored with ``resnetlab.run.evaluate`` on
the test CSV.  The width is fixed (``--width``, bottleneck half of it) so that only the depth
and the skips change between rows; the twin has exactly the same parameters.

Printed: one markdown table, per (blocks, family), the final train loss (the running mean over
the last epoch, as the loop logs it) and the test accuracy, mean ± std over ``--seeds``.
Usage::

    python benchmarks/mlp_depth.py [--blocks 2,8,32] [--seeds 3] [--epochs 10] [--table digits]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from tables import split

from resnetlab import run
from resnetlab.models import count_parameters, create_model

FAMILIES = {"residual": "mlp_resnet", "plain": "plain_mlp"}


def one_run(model: str, blocks: int, seed: int, csvs: tuple[Path, Path], args) -> tuple[float, float]:
    """(final train loss, test accuracy) of one network trained through the run API."""
    cfg = run.load_recipe("default")
    cfg.model.name = model
    cfg.model.kwargs = {"num_blocks": blocks, "width": args.width,
                        "bottleneck_width": args.width // 2, "drop_rate": 0.1}
    cfg.data.name, cfg.data.target, cfg.data.batch_size = f"csv:{csvs[0]}", "target", 32
    cfg.optim.lr = 0.05
    cfg.train.epochs, cfg.train.seed, cfg.train.tta = args.epochs, seed, False
    cfg.train.time_budget = None  # these epochs, not the main job's 5 minutes
    cfg.train.device, cfg.train.precision = args.device, "fp32"
    cfg.runs_dir, cfg.name = str(args.out / "runs"), f"{model}-{blocks}-s{seed}"
    done = run.train(cfg, progress=False)
    report, _ = run.evaluate(done, data=f"csv:{csvs[1]}", device=args.device)
    return done.fit.history[-1]["train_loss"], report.top1


def _cell(values: list[float], fmt: str) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{format(statistics.mean(values), fmt)} ± {format(spread, fmt)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", default="2,8,32")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--table", default="digits", help="breast_cancer, wine or digits")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("/tmp/resnetlab-mlp-depth"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # the shared 2-core machine: no oversubscription
    train_csv, test_csv, arrays = split(args.table, args.out / args.table)
    print(f"{args.table}: {len(arrays[1])} train / {len(arrays[3])} test rows, width "
          f"{args.width}, {args.epochs} epochs, seeds 0-{args.seeds - 1}\n", flush=True)
    print("| blocks | family | parameters | final train loss | test accuracy |\n|---|---|---|---|---|")
    for blocks in (int(b) for b in args.blocks.split(",")):
        for family, model in FAMILIES.items():
            got = [one_run(model, blocks, s, (train_csv, test_csv), args) for s in range(args.seeds)]
            params = count_parameters(create_model(
                model, in_features=arrays[0].shape[1], num_classes=len(set(arrays[1])),
                num_blocks=blocks, width=args.width, bottleneck_width=args.width // 2))
            print(f"| {blocks} | {family} | {params:,} | {_cell([g[0] for g in got], '.3f')} | "
                  f"{_cell([100 * g[1] for g in got], '.2f')}% |", flush=True)


if __name__ == "__main__":
    main()
