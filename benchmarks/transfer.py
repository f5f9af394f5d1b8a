"""The transfer experiment: does a ResNet-20 pretrained on half of Fashion-MNIST help the other
half when only 100 labelled images per class are available?

* pretrain: ``resnet20`` on Fashion-MNIST classes 0-4 (``--pretrain-per-class`` training
  images per class), trained once through ``resnetlab.run.train``;
* target: classes 5-9 with 100 training images per class (``--per-class``), 20 per class for
  validation, and the official test images of those classes (all 5000 unless ``--test-per-class``);
* three ways to use the 500 images, each through the run API with the same recipe, length and
  seed: from scratch; ``finetune`` (everything trains); ``linear`` (frozen backbone and frozen
  BN: a linear head on pretrained features); optionally (``--ways``) ``finetune-bb0.1``, the
  backbone at a tenth of the head's learning rate.

Reported: test top-1 on classes 5-9 (last weights, so validation does not pick) and the
fine-tune - scratch difference measured in the same run (target: >= 5 points).  The classes
go through image folders written under ``--out``.

A second target domain, scikit-learn's handwritten digits (8x8, upsampled to 28x28): 10 and 50
labelled images per class (``--digits-labels``), fine-tuned from the same Fashion-MNIST network
vs from scratch, tested on the digits not used for training or validation.  Usage::

    python benchmarks/transfer.py [--seeds 3] [--epochs 30] [--pretrain-epochs 4]
    python benchmarks/transfer.py --pretrained RUN_DIR --skip-fashion --digits-labels 10,50
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from resnetlab import run
from resnetlab.data.readers.idx import read_idx_pair

DATA = Path("/usr/share/datasets/fashion-mnist")
NAMES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
         "boot")


def load(split: str, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    return read_idx_pair(data_dir / f"{prefix}-images-idx3-ubyte.gz",
                         data_dir / f"{prefix}-labels-idx1-ubyte.gz", num_classes=10)


def write_split(root: Path, x: np.ndarray, picks: dict[int, np.ndarray], names=NAMES) -> None:
    """Images ``x[i]`` for ``i in picks[c]`` as ``root/names[c]/i.png``."""
    for c, indices in picks.items():
        folder = root / names[c]
        folder.mkdir(parents=True, exist_ok=True)
        for i in indices:
            Image.fromarray(x[i]).save(folder / f"{i}.png")


def make_folders(out: Path, data_dir: Path, pre_per_class: int, per_class: int,
                 test_per_class: int) -> tuple[Path, Path]:
    """``out/source`` (classes 0-4: train + val) and ``out/target`` (5-9: train/val/test)."""
    (x, y), (xt, yt) = load("train", data_dir), load("test", data_dir)
    rng = np.random.default_rng(0)
    order = {c: rng.permutation(np.flatnonzero(y == c)) for c in range(10)}
    src, tgt = out / "source", out / "target"
    if not src.exists():
        write_split(src / "train", x, {c: order[c][:pre_per_class] for c in range(5)})
        write_split(src / "val", x,
                    {c: order[c][pre_per_class:pre_per_class + 100] for c in range(5)})
    if not tgt.exists():
        write_split(tgt / "train", x, {c: order[c][:per_class] for c in range(5, 10)})
        write_split(tgt / "val", x,
                    {c: order[c][per_class:per_class + 20] for c in range(5, 10)})
        write_split(tgt / "test", xt, {c: np.flatnonzero(yt == c)[:test_per_class] for c in range(5, 10)})
    return src, tgt


def digits_folder(out: Path, per_class: int, seed: int) -> Path:
    """sklearn's digits as ``train`` (per_class), ``val`` (10) and ``test`` (the rest) folders."""
    from sklearn.datasets import load_digits

    root = out / f"digits-{per_class}-s{seed}"
    if root.exists():
        return root
    digits = load_digits()
    pixels = (digits.images * (255 / 16)).round().astype(np.uint8)
    # 8x8 -> 28x28, the pretrained network's input size
    x = np.stack([np.asarray(Image.fromarray(im).resize((28, 28), Image.BILINEAR)) for im in pixels])
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(digits.target == c)) for c in range(10)}
    cuts = {"train": (0, per_class), "val": (per_class, per_class + 10), "test": (per_class + 10, None)}
    for split, (lo, hi) in cuts.items():
        write_split(root / split, x, {c: idx[lo:hi] for c, idx in order.items()},
                    names=[str(c) for c in range(10)])
    return root


def digits_experiment(pre_dir: Path, out: Path, labels: list[int], seeds: int, epochs: int) -> None:
    print("\n| digits labels / class | scratch | fine-tuned | seeds |\n|---|---|---|---|")
    for per_class in labels:
        got: dict[str, list[float]] = {"scratch": [], "finetune": []}
        for seed in range(seeds):
            data = digits_folder(out, per_class, seed)
            for way in got:
                cfg = config(data, out / "runs", f"digits{per_class}-{way}-s{seed}", epochs, seed)
                cfg.data.batch_size = min(64, 5 * per_class)  # at least 2 steps per epoch
                cfg.data.augment = "none"  # the recipe's flip would mirror digits
                done = (run.train(cfg, test_on="last", progress=False) if way == "scratch"
                        else run.finetune(cfg, pre_dir, test_on="last", progress=False))
                got[way].append(done.results["top1"])
        print(f"| {per_class} | {statistics.mean(got['scratch']):.2%} | "
              f"{statistics.mean(got['finetune']):.2%} | {seeds} |", flush=True)


def config(data: Path, runs: Path, name: str, epochs: int, seed: int) -> run.RunConfig:
    cfg = run.load_recipe("default")
    cfg.model.name = "resnet20"
    cfg.data.name, cfg.data.batch_size = f"folder:{data}", 64
    cfg.train.epochs, cfg.train.seed, cfg.train.tta = epochs, seed, False
    cfg.runs_dir, cfg.name = str(runs), name
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--pretrain-epochs", type=int, default=4)
    ap.add_argument("--pretrain-per-class", type=int, default=2000)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--test-per-class", type=int, default=1000, help="official test images per class")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("/tmp/resnetlab-transfer"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--digits-labels", default="10,50", help="digits labels per class ('' skips)")
    ap.add_argument("--digits-epochs", type=int, default=30)
    ap.add_argument("--ways", default="scratch,finetune,linear",
                    help="comma list of scratch, finetune, linear, finetune-bb0.1")
    ap.add_argument("--pretrained", type=Path, help="reuse this pretraining run")
    ap.add_argument("--skip-fashion", action="store_true", help="only the digits experiment")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # the shared 2-core machine: no oversubscription
    src, tgt = make_folders(args.out, args.data_dir, args.pretrain_per_class, args.per_class,
                            args.test_per_class)
    runs = args.out / "runs"
    pre = (run.Run.open(args.pretrained) if args.pretrained else
           run.train(config(src, runs, "pretrain", args.pretrain_epochs, 0), progress=False))
    print(f"pretrained on classes 0-4: val top-1 {pre.results['val_top1']:.4f}", flush=True)
    if not args.skip_fashion:
        fashion_experiment(pre, tgt, runs, args)
    if args.digits_labels:
        digits_experiment(pre.run_dir, args.out, [int(n) for n in args.digits_labels.split(",")],
                          args.seeds, args.digits_epochs)


def fashion_experiment(pre: run.Run, tgt: Path, runs: Path, args: argparse.Namespace) -> None:
    """Scratch vs fine-tune vs linear head on classes 5-9; prints the table."""
    scores: dict[str, list[float]] = {way: [] for way in args.ways.split(",")}
    for seed in range(args.seeds):
        for way in scores:
            cfg = config(tgt, runs, f"{way}-s{seed}", args.epochs, seed)
            if way == "scratch":
                done = run.train(cfg, test_on="last", progress=False)
            else:
                if way == "linear":
                    cfg.finetune.freeze, cfg.finetune.bn = "backbone", "frozen"
                if way == "finetune-bb0.1":  # the backbone at a tenth of the head's lr
                    cfg.finetune.backbone_lr_scale = 0.1
                done = run.finetune(cfg, pre.run_dir, test_on="last", progress=False)
            scores[way].append(done.results["top1"])
            print(f"seed {seed} {way}: test top-1 {done.results['top1']:.4f}", flush=True)
    print("\n| start | test top-1, classes 5-9 (mean of seeds) | seeds |\n|---|---|---|")
    for way, accs in scores.items():
        spread = f" +- {statistics.stdev(accs):.2%}" if len(accs) > 1 else ""
        print(f"| {way} | {statistics.mean(accs):.2%}{spread} | "
              f"{', '.join(f'{a:.2%}' for a in accs)} |")
    if "finetune" in scores and "scratch" in scores:
        gain = 100 * (statistics.mean(scores["finetune"]) - statistics.mean(scores["scratch"]))
        print(f"\nfine-tune - scratch: {gain:+.1f} points (target >= +5)")


if __name__ == "__main__":
    main()
