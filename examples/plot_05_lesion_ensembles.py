"""
Residual networks as ensembles: the lesion study
================================================

Veit et al. 2016 removed single blocks from a trained ResNet-110 and found that its accuracy
barely moved, while removing one layer of a VGG-style plain net destroyed it. Their reading: a
residual network behaves like an ensemble of many paths of different lengths, and no single
path is essential.

:func:`resnetlab.analysis.lesion.lesion_study` does the experiment on any trained network:
each block is removed in turn (a residual block becomes its shortcut; a plain block, which has
none, becomes the parameter-free option-A shortcut), then ``k`` random blocks at once.
Nothing is modified for good: the model is restored exactly after each measurement.

Full size: ResNet-56 and plain-56 trained with the ``compare-quick`` recipe, 2,000 test images,
up to 5 blocks removed. Quick size: ResNet-20 and plain-20 on 2,000 images for 3 epochs, 500
test images, up to 3 blocks.
"""

# %%
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from resnetlab.analysis.lesion import describe_lesions, lesion_study
from resnetlab.analysis.runs import data_batches, load_run
from resnetlab.run import load_recipe, train

QUICK = os.environ.get("RESNETLAB_DOCS_QUICK") == "1"
work = Path(tempfile.mkdtemp(prefix="resnetlab-lesion-"))
depth, images, max_k, draws = (20, 500, 3, 3) if QUICK else (56, 2000, 5, 5)

studies = {}
for family in ("resnet", "plain"):
    cfg = load_recipe("compare-quick")
    cfg.model.name, cfg.runs_dir = f"{family}{depth}", str(work)
    if QUICK:
        cfg.data.train_size, cfg.data.val_size, cfg.train.epochs = 2000, 300, 3
    run = train(cfg, progress=False)
    net = load_run(run.best).model            # the best checkpoint, rebuilt, eval mode
    batches, classes = data_batches("fashion-mnist", split="test", images=images, batch_size=250)
    studies[family] = lesion_study(net, list(batches), label=f"{family}-{depth}",
                                   max_k=max_k, draws=draws, seed=0)
    print(f"{family}-{depth}: {100 * studies[family].baseline:.2f}% intact on {images} test images")

# %%
# One block removed at a time
# ---------------------------
# Hollow markers are the downsampling blocks (they change the shape, so their "shortcut" is
# the zero-padding one).
fig, ax = plt.subplots(figsize=(8, 3.8))
for family, color in (("resnet", "#4878d0"), ("plain", "#d65f5f")):
    s = studies[family]
    ax.axhline(100 * s.baseline, color=color, lw=0.8, ls=":")
    for r in s.single:
        ax.plot(r["index"], 100 * r["accuracy"], "o", color=color,
                mfc="white" if r["downsampling"] else color)
    ax.plot([r["index"] for r in s.single], [100 * r["accuracy"] for r in s.single], "-",
            color=color, alpha=0.5, label=f"{s.label} (dotted: intact)")
ax.axhline(10, color="gray", lw=0.8)
ax.text(0, 11, "chance", color="gray", fontsize=8)
ax.set_xlabel("block removed")
ax.set_ylabel("test accuracy (%)")
ax.legend()
fig.tight_layout()

# %%
# Several blocks removed at once
# ------------------------------
fig, ax = plt.subplots(figsize=(6, 3.8))
for family, color in (("resnet", "#4878d0"), ("plain", "#d65f5f")):
    s = studies[family]
    ks = sorted({r["k"] for r in s.multi})
    means = [statistics.fmean(100 * r["accuracy"] for r in s.multi if r["k"] == k) for k in ks]
    for r in s.multi:
        ax.plot(r["k"], 100 * r["accuracy"], ".", color=color, alpha=0.4)
    ax.plot([0, *ks], [100 * s.baseline, *means], "o-", color=color, label=s.label)
ax.set_xlabel("blocks removed at random (k)")
ax.set_ylabel("test accuracy (%)")
ax.legend()
fig.tight_layout()

# %%
for family in studies:
    for line in describe_lesions(studies[family]):
        print("-", line)

# %%
# What we measured
# ----------------
def inner_drops(s):
    return [100 * r["drop"] for r in s.single if not r["downsampling"]]


res, pln = studies["resnet"], studies["plain"]
k1 = {f: statistics.fmean(100 * r["accuracy"] for r in s.multi if r["k"] == 1) for f, s in studies.items()}
kmax = {f: statistics.fmean(100 * r["accuracy"] for r in s.multi if r["k"] == max_k) for f, s in studies.items()}
cheap = sum(d <= 2 for d in inner_drops(res))
print(
    f"Removing one non-downsampling block of the trained resnet-{depth} (intact "
    f"{100 * res.baseline:.2f}%) cost a median of {statistics.median(inner_drops(res)):.2f} points "
    f"and at most {max(inner_drops(res)):.2f}; {cheap} of its {len(inner_drops(res))} such blocks "
    f"cost at most 2 points. The same lesion of plain-{depth} (intact {100 * pln.baseline:.2f}%) "
    f"cost a median of {statistics.median(inner_drops(pln)):.2f} points. With k random blocks "
    f"removed, the residual net kept {k1['resnet']:.1f}% (k=1) and {kmax['resnet']:.1f}% (k={max_k}) "
    f"on average, the plain net {k1['plain']:.1f}% and {kmax['plain']:.1f}%. "
    + ("The residual net degrades gracefully and the plain one does not, as Veit et al. report. "
       if kmax["resnet"] > kmax["plain"] + 10 else "The gap between the two is small here. ")
    + (f"With only {len(res.single)} blocks, each one still carries a visible share of the work: "
       "the ensemble picture is one of deep nets." if len(res.single) < 20 else
       f"Across its {len(res.single)} blocks the work is spread out, as in an ensemble."))
shutil.rmtree(work, ignore_errors=True)
