"""Main-job recipes compared at a FIXED amount of training work (issue 25).

Accuracy after a given number of optimiser steps at given input sizes does not depend on the CPU
that runs them; only the wall time does.  So the question "which recipe reaches 93% inside
5 minutes on an AVX2 laptop" splits in two: (1) the work that fits in 5 minutes there, measured
once on that CPU (benchmarks/README.md: 1700 steps of batch 128 at 20/24/28 px on the AVX2 fp32
path), and (2) which recipe gets the most accuracy out of that work, which this script answers
on whatever device is at hand (a GPU does it in minutes), in fp32, three seeds each.

Each variant is ``resnetlab train`` flags on top of the default recipe; every (variant, seed)
is an ordinary run directory, trained in a separate process, ``--jobs`` at a time.  It prints a
markdown table (val and test top-1, mean ± std and worst over seeds) and writes JSON.  Usage::

    python benchmarks/recipe_search.py --device cuda --jobs 8 --seeds 0,1,2 --out search.json
    python benchmarks/recipe_search.py --variants base,ema995 --quick   # a smoke run on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

# The 5-minute AVX2 fp32 work (benchmarks/README.md row 19): 1700 steps of 128 images, the
# first, second and last third at 20, 24 and 28 px, every layer trained to the end (the
# default recipe before its late freeze).  Every variant below keeps that work unless its
# name says otherwise, so the accuracies compare at equal cost.
WORK = ["--progressive-sizes", "20,24,28", "--set", "train.steps=1700",
        "--epochs", "4", "--late-freeze", "none"]
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "ema99": ["--ema", "0.99"],
    "ema995": ["--ema", "0.995"],
    "lr0.2": ["--lr", "0.2"],
    "lr0.05": ["--lr", "0.05"],
    "ls0": ["--label-smoothing", "0"],
    "wd1e-3": ["--weight-decay", "1e-3"],
    "wd2.5e-4": ["--weight-decay", "2.5e-4"],
    "val2000": ["--val-size", "2000"],
    "warm0.05": ["--warmup-frac", "0.05"],
    "warm0.3": ["--warmup-frac", "0.3"],
    "crop1": ["--augment", "crop:1,flip"],
    "sizes24-28": ["--progressive-sizes", "24,24,28"],  # more work per step: the cost of +px
    "ema995+val2000": ["--ema", "0.995", "--val-size", "2000"],
    # second round (after lr0.2 and wd1e-3 led the first): their combinations
    "lr0.2+wd1e-3": ["--lr", "0.2", "--weight-decay", "1e-3"],
    "lr0.3": ["--lr", "0.3"],
    "lr0.2+val2000": ["--lr", "0.2", "--val-size", "2000"],
    "lr0.2+wd1e-3+val2000": ["--lr", "0.2", "--weight-decay", "1e-3", "--val-size", "2000"],
    "lr0.3+wd1e-3": ["--lr", "0.3", "--weight-decay", "1e-3"],
    "full6ep": ["--set", "data.progressive_sizes=[]", "--set", "train.steps=null", "--epochs", "6"],
    # fifth round: each block starting as its skip (Goyal et al. 2017), lighter label smoothing
    "zinit": ["--zero-init-last"],
    "zinit+lr0.3": ["--zero-init-last", "--lr", "0.3"],
    "ls0.05": ["--label-smoothing", "0.05"],
    # seventh round: the stem and first stage frozen from a fraction of the steps (FreezeOut)
    # at the same AVX2 seconds: a frozen step costs 0.72x / 0.63x / 0.64x at 20 / 24 / 28 px
    # (2-core Xeon capped, bare steps of batch 128), so the base work buys 2043 steps frozen
    # from 2/3 and 2193 from 1/2; fz67-1700 is the freeze at equal steps.  (Screened as a
    # scratch patch before --late-freeze existed, which froze one step later.)
    "fz67-eq": ["--late-freeze", "0.6667", "--set", "train.steps=2043", "--epochs", "6"],
    "fz50-eq": ["--late-freeze", "0.5", "--set", "train.steps=2193", "--epochs", "6"],
    "fz67-1700": ["--late-freeze", "0.6667"],
}

# Seconds per training step at each input size against 20 px on the AVX2 fp32 path, timed in
# turn (benchmarks/README.md, issue 25): a 2-core Zen 4 read 97/132/197 ms at 20/24/28 px, a
# 2-core Xeon 83/113/167 ms one day and 124/168/254 ms (16 px: 82 ms) the next.
AVX2_STEP_COST = {16: 0.66, 20: 1.0, 24: 1.36, 28: 2.04}
BASE_SIZES, BASE_STEPS = (20, 24, 28), 1700
FROZEN_COST = 0.64  # a 28 px step with the stem and first stage frozen (2-core Xeon capped)


def equal_time(sizes: tuple[int, ...], late_freeze: str | None = None) -> list[str]:
    """Flags for a progressive-resizing schedule of ``sizes`` (equal phases) trained for as
    many steps as the base work's AVX2 time buys at their costs: cheaper sizes, more steps.
    ``late_freeze``: the last phase trains with the stem and first stage frozen (0.64x)."""
    costs = [AVX2_STEP_COST[s] for s in sizes]
    if late_freeze is not None:
        costs[-1] *= FROZEN_COST
    cost = sum(AVX2_STEP_COST[s] for s in BASE_SIZES) / len(BASE_SIZES) * BASE_STEPS
    steps = int(cost / (sum(costs) / len(costs)))
    freeze = [] if late_freeze is None else ["--late-freeze", late_freeze]
    return ["--progressive-sizes", ",".join(map(str, sizes)), *freeze,
            "--set", f"train.steps={steps}", "--epochs", "6"]


# third round: the same AVX2 seconds spent on more, cheaper steps (more of them at low size)
for _sizes in [(20, 20, 24, 28), (20, 20, 28), (16, 20, 24, 28), (16, 20, 28), (16, 16, 20, 24, 28)]:
    VARIANTS["t" + "-".join(map(str, _sizes))] = equal_time(_sizes)

# eighth round: the late freeze with cheaper 16 px phases, at the same AVX2 seconds; and
# frozen from 2/3 at 4% more steps (what about 11 s more of training buys in a 5-minute AVX2 run)
VARIANTS["q16-fz75-eq"] = equal_time((16, 20, 24, 28), "0.75")
VARIANTS["f16-fz80-eq"] = equal_time((16, 16, 20, 24, 28), "0.8")
VARIANTS["fz67-2125"] = ["--late-freeze", "0.6667", "--set", "train.steps=2125", "--epochs", "6"]

# fourth round: batch 64 (twice the updates per image) at the same AVX2 seconds; a batch of 64
# costs 1.13x per image there (2-core Xeon capped, interleaved: 1.11-1.14x at 20-28 px)
_B64_STEPS = int(BASE_STEPS * 2 / 1.13)
for _lr in ("0.1", "0.14"):
    VARIANTS[f"b64-lr{_lr}"] = ["--batch-size", "64", "--lr", _lr, "--set",
                                f"train.steps={_B64_STEPS}", "--epochs", "4"]


def _train(name: str, flags: list[str], seed: int, args: argparse.Namespace, root: Path) -> dict:
    """One (variant, seed) in its own process; returns the run's headline numbers."""
    run_dir = root / f"{name}-s{seed}"
    cmd = [sys.executable, "-m", "resnetlab", "train", *WORK, "--precision", args.precision,
           *flags, "--seed", str(seed),
           "--device", args.device, "--runs-dir", str(root), "--name", run_dir.name, "--no-progress"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if args.quick:
        cmd += ["--train-size", "2000", "--val-size", "500", "--set", "train.steps=30"]
    start = time.perf_counter()
    left = args.deadline - time.monotonic()
    if left <= 0:
        return {"variant": name, "seed": seed, "error": "not started: --time-limit reached"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=None if left == float("inf") else left,
                              env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    except subprocess.TimeoutExpired:
        return {"variant": name, "seed": seed, "error": "cut off by --time-limit"}
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"variant": name, "seed": seed, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    res = json.loads((run_dir / "results.json").read_text())
    return {"variant": name, "seed": seed, "test_top1": res["top1"], "val_top1": res.get("val_top1"),
            "steps": res["steps"], "wall_s": wall, "weights": res.get("weights")}


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _summary(rows: list[dict]) -> list[str]:
    lines = ["| variant | seeds | val top-1 mean ± std | test top-1 mean ± std | worst test |",
             "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        ok = [r for r in rows if r["variant"] == name and "error" not in r]
        if not ok:
            lines.append(f"| {name} | 0 | failed: {rows[[r['variant'] for r in rows].index(name)]['error']} | | |")
            continue
        test = [100 * r["test_top1"] for r in ok]
        val = [100 * (r["val_top1"] or 0) for r in ok]
        lines.append(f"| {name} | {len(ok)} | {statistics.mean(val):.2f} ± {_sd(val):.2f} | "
                     f"{statistics.mean(test):.2f} ± {_sd(test):.2f} | {min(test):.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32",
                        help="fp32 (the AVX2 path's); bf16 screens faster on a CPU with AMX")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--threads", type=int, default=2, help="OMP threads per run")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="JSON file of every run")
    parser.add_argument("--quick", action="store_true", help="30 steps on 2,000 images")
    parser.add_argument("--time-limit", type=float, default=float("inf"),
                        help="seconds: runs not finished by then are cut off and reported so")
    args = parser.parse_args()
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(tempfile.mkdtemp(prefix="recipe-search-"))
    args.deadline = time.monotonic() + args.time_limit
    tasks = [(n, VARIANTS[n], s) for s in seeds for n in names]  # every variant's seed 0 first
    rows = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for future in as_completed([pool.submit(_train, *t, args, root) for t in tasks]):
            rows.append(future.result())
            print(json.dumps(rows[-1]), flush=True)
            if args.out:  # written as runs land: a cut-off search keeps what finished
                Path(args.out).write_text(json.dumps(rows, indent=1))
    rows.sort(key=lambda r: (names.index(r["variant"]), r["seed"]))
    print("\n".join(_summary(rows)))


if __name__ == "__main__":
    main()
