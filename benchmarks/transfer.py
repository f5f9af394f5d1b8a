"""Label efficiency of transfer learning: test accuracy against labelled images per class,
fine-tuned from a pretrained ResNet-20 vs trained from scratch with the same budget (issue 23).

* pretrain: ``resnet20`` on the five Fashion-MNIST classes that are *not* the hard target
  (trouser, sandal, sneaker, bag, boot: all their training images), once, through
  ``resnetlab.run.train``;
* target ``fashion-hard``: the five confusable tops (T-shirt, pullover, dress, coat, shirt),
  tested on all their official test images (1000 per class);
* target ``digits``: scikit-learn's handwritten digits (8x8, upsampled to 28x28), 60 test
  images per class held out once, the rest (104-122 per class) the labelled pool.

For each target, labels per class ``n`` in ``--sizes`` (``all``: the whole pool), seed and arm
(``scratch``, ``finetune``), a run trains on the first ``n`` images per class of a seeded
permutation of the pool.  Both arms get the same budget: the same optimiser steps
(``--epochs-equiv`` passes over the ``n``-image set, clamped to ``[--min-steps,
--max-steps]``), batch, recipe and seed; scored on the test images with the last weights
(validation, 10 images per class kept apart from the pool, does not pick).  Small sets are
hard-linked ``ceil(1024 / images)`` times into the run's folder so that one "epoch" is at least
1024 images: per-epoch evaluation and checkpoints then cost what they cost on a big set, and no
label count changes.

Printed: a table per target (mean ± std over seeds), the labels per class at which scratch
catches up (its mean within ``--catch-up`` points of fine-tuning at that size and every larger
one), and the gain at 10 labels per class.  Written: ``OUT/transfer_curve.json`` (every run and
the summary) and ``OUT/transfer_curve.png``.  Runs are spread over ``--jobs`` processes (spawned:
safe with CUDA).  Usage::

    python benchmarks/transfer.py --quick                         # a CPU smoke run, minutes
    python benchmarks/transfer.py --device cuda --jobs 8 --out $OUT/transfer
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import signal
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from resnetlab import run
from resnetlab.data.readers.idx import read_idx_pair

DATA = Path("/usr/share/datasets/fashion-mnist")
NAMES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
         "boot")
TARGET = (0, 2, 3, 4, 6)  # the tops: confused with each other far more than with the rest
SOURCE = tuple(c for c in range(10) if c not in TARGET)
ARMS = ("scratch", "finetune")
MIN_EPOCH_IMAGES = 1024


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


def _digits_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255 / 16)).round().astype(np.uint8)
    # 8x8 -> 28x28, the pretrained network's input size
    x = np.stack([np.asarray(Image.fromarray(im).resize((28, 28), Image.BILINEAR)) for im in pixels])
    return x, digits.target


def prepare(out: Path, data_dir: Path, quick: bool, targets: str) -> dict[str, dict]:
    """The pretraining folder and, per target in ``targets``, its pool/val/test folders
    (written once)."""
    (x, y), (xt, yt) = load("train", data_dir), load("test", data_dir)
    rng = np.random.default_rng(0)
    order = {c: rng.permutation(np.flatnonzero(y == c)) for c in range(10)}
    per_pre, test_per, pool = (300, 50, 200) if quick else (None, None, None)
    pre = out / "data" / "pretrain"
    if not pre.exists():
        write_split(pre / "train", x, {c: order[c][100:][:per_pre] for c in SOURCE})
        write_split(pre / "val", x, {c: order[c][:100] for c in SOURCE})
        # a test split, so that `resnetlab analyze lesion RUN` works on the pretrained run
        write_split(pre / "test", xt, {c: np.flatnonzero(yt == c)[:test_per] for c in SOURCE})
    made = {"pretrain": {"root": pre}}
    if "fashion-hard" in targets.split(","):
        made["fashion-hard"] = _fashion_target(out, x, xt, yt, order, test_per, pool)
    if "digits" in targets.split(","):
        made["digits"] = _digits_target(out)
    return made


def _fashion_target(out, x, xt, yt, order, test_per, pool) -> dict:
    root = out / "data" / "fashion-hard"
    if not root.exists():
        write_split(root / "pool", x, {c: order[c][10:][:pool] for c in TARGET})
        write_split(root / "val", x, {c: order[c][:10] for c in TARGET})
        write_split(root / "test", xt, {c: np.flatnonzero(yt == c)[:test_per] for c in TARGET})
    return {"root": root, "classes": [NAMES[c] for c in TARGET], "augment": "flip"}


def _digits_target(out: Path) -> dict:
    root = out / "data" / "digits"
    names = [str(c) for c in range(10)]
    if not root.exists():
        x, y = _digits_images()
        rng = np.random.default_rng(0)
        order = {c: rng.permutation(np.flatnonzero(y == c)) for c in range(10)}
        write_split(root / "test", x, {c: idx[:60] for c, idx in order.items()}, names)
        write_split(root / "val", x, {c: idx[60:70] for c, idx in order.items()}, names)
        write_split(root / "pool", x, {c: idx[70:] for c, idx in order.items()}, names)
    return {"root": root, "classes": names, "augment": "none"}  # a flip would mirror digits


def run_folder(target: dict, name: str, per_class: int | None, seed: int) -> tuple[Path, int]:
    """``folder:`` data for one run: ``per_class`` images per class of a seeded permutation of
    the pool (hard links, repeated to fill an epoch), val and test linked; returns the folder
    and the number of distinct labelled images."""
    root = target["root"] / "runs" / name
    pool = target["root"] / "pool"
    rng = np.random.default_rng(1000 + seed)
    picks = {c: sorted(p for p in (pool / c).iterdir()) for c in target["classes"]}
    picks = {c: [files[i] for i in rng.permutation(len(files))[:per_class]] for c, files in picks.items()}
    images = sum(map(len, picks.values()))
    if not root.exists():
        repeat = math.ceil(MIN_EPOCH_IMAGES / images)
        for c, files in picks.items():
            (root / "train" / c).mkdir(parents=True)
            for f in files:
                for r in range(repeat):
                    os.link(f, root / "train" / c / f"{f.stem}-{r}.png")
        for split in ("val", "test"):
            (root / split).symlink_to(target["root"] / split, target_is_directory=True)
    return root, images


def steps_for(images: int, batch: int, args: argparse.Namespace) -> int:
    """The shared budget: ``--epochs-equiv`` passes over the labelled set, clamped."""
    return int(min(args.max_steps, max(args.min_steps, math.ceil(args.epochs_equiv * images / batch))))


def config(data: Path, runs: Path, name: str, seed: int, steps: int, batch: int,
           epoch_images: int, args: argparse.Namespace) -> run.RunConfig:
    cfg = run.load_recipe("default")
    cfg.model.name = "resnet20"
    cfg.data.name, cfg.data.batch_size, cfg.data.num_workers = f"folder:{data}", batch, 0
    cfg.train.seed, cfg.train.tta, cfg.train.device = seed, False, args.device
    cfg.train.steps = steps
    cfg.train.epochs = math.ceil(steps / max(1, epoch_images // batch))  # covers the steps
    cfg.runs_dir, cfg.name = str(runs), name
    return cfg


def one_run(job: dict) -> dict:
    """One (target, size, arm, seed) run in a worker process; returns its point (with an
    ``error`` instead of ``top1`` when the run failed, so that one failure loses one point)."""
    try:
        return _one_run(job)
    except Exception as err:  # noqa: BLE001 - reported in the point and printed at the end
        return {"target": job["target_name"], "per_class": job["size"], "arm": job["arm"],
                "seed": job["seed"], "error": f"{type(err).__name__}: {err}"[:500]}


def _one_run(job: dict) -> dict:
    args = argparse.Namespace(**job["args"])
    torch.set_num_threads(args.threads)
    target = job["target"]
    size = job["size"]
    tag = f"{job['target_name']}-n{size}-s{job['seed']}"
    data, images = run_folder(target, tag, None if size == "all" else int(size), job["seed"])
    repeat = math.ceil(MIN_EPOCH_IMAGES / images)
    batch = min(args.batch, images * repeat)  # BN sees a full batch even of 5 distinct images
    steps = steps_for(images, batch, args)
    cfg = config(data, Path(args.out) / "runs", f"{tag}-{job['arm']}", job["seed"], steps, batch,
                 images * repeat, args)
    cfg.data.augment = target["augment"]
    start = time.perf_counter()
    done = (run.train(cfg, test_on="last", progress=False) if job["arm"] == "scratch" else
            run.finetune(cfg, job["pretrained"], test_on="last", progress=False))
    return {"target": job["target_name"], "per_class": size, "images": images,
            "arm": job["arm"], "seed": job["seed"], "steps": steps, "batch": batch,
            "top1": done.results["top1"], "wall_s": round(time.perf_counter() - start, 1)}


def pretrain(root: Path, args: argparse.Namespace) -> Path:
    """The source network (one run; ``--pretrained`` reuses one)."""
    if args.pretrained:
        return args.pretrained
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cfg = run.load_recipe("default")
    cfg.model.name, cfg.data.name, cfg.data.num_workers = "resnet20", f"folder:{root}", 0
    cfg.train.epochs, cfg.train.tta, cfg.train.device = args.pretrain_epochs, False, args.device
    cfg.train.time_budget = None  # these epochs, not the main job's 5 minutes
    cfg.runs_dir, cfg.name = str(args.out / "runs"), "pretrain"
    done = run.train(cfg, progress=False)
    print(f"pretrained resnet20 on {', '.join(NAMES[c] for c in SOURCE)}: val top-1 "
          f"{done.results['val_top1']:.2%} ({done.results['steps']} steps)", flush=True)
    return done.run_dir


def summarise(points: list[dict]) -> dict[str, list[dict]]:
    """Per target: one row per size with mean and std of each arm over seeds."""
    out: dict[str, list[dict]] = {}
    for target in dict.fromkeys(p["target"] for p in points):
        rows = []
        for size in dict.fromkeys(p["per_class"] for p in points if p["target"] == target):
            row = {"per_class": size}
            for arm in ARMS:
                accs = [p["top1"] for p in points if (p["target"], p["per_class"], p["arm"]) == (target, size, arm)]
                row[arm] = statistics.fmean(accs) if accs else math.nan
                row[f"{arm}_std"] = statistics.stdev(accs) if len(accs) > 1 else 0.0
                row["seeds"] = len(accs)
            row["images"] = next(p["images"] for p in points if (p["target"], p["per_class"]) == (target, size))
            rows.append(row)
        out[target] = rows
    return out


def catch_up(rows: list[dict], points: float) -> str:
    """The smallest labels per class from which on scratch is within ``points`` of fine-tuning."""
    for i, row in enumerate(rows):
        if all(r["scratch"] >= r["finetune"] - points / 100 for r in rows[i:]):
            return str(row["per_class"])
    return "not within the sizes measured"


def report(summary: dict[str, list[dict]], args: argparse.Namespace) -> dict[str, dict]:
    """Print the tables and the two headline numbers per target; returns the headlines."""
    heads = {}
    for target, rows in summary.items():
        print(f"\n{target}\n\n| labels / class | images | scratch | fine-tuned | gain (points) | seeds |"
              "\n|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['per_class']} | {r['images']} | {r['scratch']:.2%} ± {r['scratch_std']:.2%} | "
                  f"{r['finetune']:.2%} ± {r['finetune_std']:.2%} | "
                  f"{100 * (r['finetune'] - r['scratch']):+.1f} | {r['seeds']} |")
        at10 = next((r for r in rows if str(r["per_class"]) == "10"), None)
        gain = (100 * (at10["finetune"] - at10["scratch"]),
                100 * math.hypot(at10["finetune_std"], at10["scratch_std"])) if at10 else None
        heads[target] = {"catch_up_at": catch_up(rows, args.catch_up), "gain_at_10": gain}
        at = heads[target]["catch_up_at"]
        caught = (f"scratch catches up (within {args.catch_up:g} point) at {at} labels per class"
                  if at[0].isdigit() or at == "all" else f"scratch does not catch up ({at})")
        print(f"\n{target}: {caught}; gain at 10 labels per class: "
              + (f"{gain[0]:+.1f} ± {gain[1]:.1f} points" if gain else "not measured"), flush=True)
    return heads


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sizes", default="1,5,10,50,100,all", help="labels per class; 'all': the pool")
    ap.add_argument("--targets", default="fashion-hard,digits")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: sizes 1,10, one seed, small pretraining, 20-40 steps")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    ap.add_argument("--threads", type=int, help="torch threads per job (default cores / jobs)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs-equiv", type=float, default=15.0)
    ap.add_argument("--min-steps", type=int, default=150)
    ap.add_argument("--max-steps", type=int, default=600)
    ap.add_argument("--pretrain-epochs", type=int, default=3)
    ap.add_argument("--catch-up", type=float, default=1.0, help="points")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("/tmp/resnetlab-transfer"))
    ap.add_argument("--pretrained", type=Path, help="reuse this pretraining run")
    ap.add_argument("--from-json", type=Path, help="only re-print and re-draw a saved run's "
                    "transfer_curve.json (its points; written into --out)")
    if ap.parse_known_args(argv)[0].quick:  # --quick changes defaults; explicit flags still win
        ap.set_defaults(seeds=1, sizes="1,10", pretrain_epochs=1, min_steps=20, max_steps=40,
                        epochs_equiv=2.0)
    args = ap.parse_args(argv)
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    return args


def _jobs(folders: dict, pretrained: Path, args: argparse.Namespace) -> list[dict]:
    """Every (target, size, seed, arm), the biggest sets first (they take longest, so the
    pool's processes finish together), each run's folder made here before the workers start."""
    jobs = []
    for t in args.targets.split(","):
        for size in args.sizes.split(","):
            for seed in range(args.seeds):
                per_class = None if size == "all" else int(size)
                _, images = run_folder(folders[t], f"{t}-n{size}-s{seed}", per_class, seed)
                jobs += [{"target_name": t, "target": folders[t], "size": size, "arm": arm,
                          "seed": seed, "pretrained": str(pretrained), "images": images,
                          "args": {**vars(args), "out": str(args.out)}} for arm in ARMS]
    return sorted(jobs, key=lambda j: -j["images"])


def _save(points: list[dict], args: argparse.Namespace, extra: dict) -> dict:
    """``transfer_curve.json`` with every point so far (rewritten after each run: a run cut
    short by a timeout still leaves its finished points)."""
    good = [p for p in points if "top1" in p]
    info = {"points": points, "summary": summarise(good), "device": args.device,
            "jobs": args.jobs, "budget": {k: getattr(args, k) for k in (
                "epochs_equiv", "min_steps", "max_steps", "batch", "pretrain_epochs", "seeds")},
            **extra}
    (args.out / "transfer_curve.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    return info


def _order(summary: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Rows by labels per class, ``all`` last (points arrive in any order)."""
    key = lambda r: math.inf if str(r["per_class"]) == "all" else int(r["per_class"])  # noqa: E731
    return {t: sorted(rows, key=key) for t, rows in summary.items()}


def finish(points: list[dict], args: argparse.Namespace, extra: dict) -> None:
    """Print the tables and headlines, write the JSON and the figure."""
    failed = [p for p in points if "error" in p]
    for p in failed:
        print(f"FAILED {p['target']} n={p['per_class']} {p['arm']} seed {p['seed']}: {p['error']}")
    summary = _order(summarise([p for p in points if "top1" in p]))
    heads = report(summary, args)
    _save(points, args, {**extra, "headlines": heads, "summary_ordered": summary})
    from resnetlab.analysis.plots import plot_label_efficiency

    plot_label_efficiency(summary, args.out / "transfer_curve.png")
    print(f"wrote {args.out / 'transfer_curve.json'} and {args.out / 'transfer_curve.png'}")


def _stop_workers(signum, frame) -> None:
    """On SIGTERM (a ``timeout``), kill the pool's processes too; the JSON has the points."""
    for child in mp.active_children():
        child.kill()
    os._exit(128 + signum)


def main(argv=None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:  # re-print and re-draw from a saved (maybe partial) run
        finish(json.loads(args.from_json.read_text())["points"], args, {"from": str(args.from_json)})
        return
    start = time.perf_counter()
    folders = prepare(args.out, args.data_dir, args.quick, args.targets)
    pretrained = pretrain(folders["pretrain"]["root"], args)
    jobs, points = _jobs(folders, pretrained, args), []
    extra = {"pretrained": str(pretrained)}
    signal.signal(signal.SIGTERM, _stop_workers)  # `timeout` must not leave runs on the GPU
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            for done in as_completed([pool.submit(one_run, job) for job in jobs]):
                points.append(done.result())
                _save(points, args, extra)
    else:
        for job in jobs:
            points.append(one_run(job))
            _save(points, args, extra)
    extra["wall_s"] = round(time.perf_counter() - start, 1)
    print(f"\n{len(points)} runs + pretraining in {extra['wall_s']:.0f} s on {args.device} "
          f"with {args.jobs} jobs", flush=True)
    finish(points, args, extra)


if __name__ == "__main__":
    main()
