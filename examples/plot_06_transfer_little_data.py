"""
Transfer learning with little data
==================================

A network trained on one task has learned features (edges, strokes, textures) that another
task can reuse. With plenty of labels that hardly matters; with few, starting from pretrained
weights should beat starting from scratch. How few is "few"?

We pretrain a ResNet-20 on Fashion-MNIST (clothes), then learn scikit-learn's handwritten
digits (8x8 pixels, upsampled to 28x28) from ``n`` labelled images per class, twice: from
scratch with :func:`resnetlab.run.train`, and fine-tuned from the clothes network with
:func:`resnetlab.run.finetune` (the head is replaced: 10 clothes -> 10 digits). Both see the
same images, recipe and number of steps; the score is on digits neither has seen.

Quick size: pretraining on 5,000 images for 2 epochs; 5 and 20 labels per class; 1 seed.
Full size: 20,000 images for 4 epochs; 5, 10, 25 and 50 labels per class; 3 seeds.
"""

# %%
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from resnetlab.run import finetune, load_recipe, train

QUICK = os.environ.get("RESNETLAB_DOCS_QUICK") == "1"
work = Path(tempfile.mkdtemp(prefix="resnetlab-transfer-"))
labels_per_class, seeds = ([5, 20], [0]) if QUICK else ([5, 10, 25, 50], [0, 1, 2])

# %%
# Pretraining on clothes
# ----------------------
pre = load_recipe("default")
pre.runs_dir, pre.name = str(work), "pretrained"
pre.data.train_size, pre.data.val_size = (5000, 500) if QUICK else (20000, 2000)
pre.data.batch_size = 64 if QUICK else 128      # more steps for the same images in the quick size
pre.train.epochs = 2 if QUICK else 4
pre.train.time_budget = None                    # these epochs, not the main job's 5 minutes
pre.train.tta = not QUICK                       # flip TTA doubles the test evaluation
pretrained = train(pre, progress=False)
print(f"pretrained on Fashion-MNIST: {100 * pretrained.results['top1']:.2f}% test top-1")

# %%
# The digits as image folders
# ---------------------------
# ``folder:PATH`` reads ``train/``, ``val/`` and ``test/`` sub-folders of ``<class>/<image>``.
digits = load_digits()
images = (digits.images * (255 / 16)).astype(np.uint8)
rng = np.random.default_rng(0)
order = {c: rng.permutation(np.flatnonzero(digits.target == c)) for c in range(10)}
TEST_PER_CLASS, VAL_PER_CLASS = 100, 5


def write_folder(root: Path, per_class: int) -> Path:
    """train: ``per_class`` images per digit; val: 5; test: the same 100 per digit every time."""
    splits = {"test": (0, TEST_PER_CLASS), "val": (TEST_PER_CLASS, TEST_PER_CLASS + VAL_PER_CLASS),
              "train": (TEST_PER_CLASS + VAL_PER_CLASS, TEST_PER_CLASS + VAL_PER_CLASS + per_class)}
    for split, (lo, hi) in splits.items():
        for c in range(10):
            folder = root / split / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            for i in order[c][lo:hi]:
                Image.fromarray(images[i]).resize((28, 28), Image.Resampling.BILINEAR).save(folder / f"{i}.png")
    return root


fig, axes = plt.subplots(1, 10, figsize=(9, 1.2))
for c, ax in enumerate(axes):
    ax.imshow(Image.fromarray(images[order[c][0]]).resize((28, 28), Image.Resampling.BILINEAR), cmap="gray")
    ax.set_axis_off()
fig.suptitle("the target task: digits, upsampled to 28x28")

# %%
# Scratch vs fine-tuned, as the labels shrink
# -------------------------------------------
scores = {"scratch": {}, "finetune": {}}
for n in labels_per_class:
    root = write_folder(work / f"digits-{n}", n)
    for seed in seeds:
        cfg = load_recipe("default")
        cfg.runs_dir = str(work)
        cfg.data.name, cfg.data.augment = f"folder:{root}", "none"   # mirrored digits are other digits
        cfg.data.batch_size, cfg.train.tta = 16, False
        cfg.train.epochs, cfg.train.seed = (12 if QUICK else 20), seed
        cfg.train.time_budget = None
        cfg.name = f"scratch-{n}-s{seed}"
        scratch = train(cfg, progress=False)
        cfg.name = f"finetune-{n}-s{seed}"
        tuned = finetune(cfg, pretrained.run_dir, progress=False)
        scores["scratch"].setdefault(n, []).append(100 * scratch.results["top1"])
        scores["finetune"].setdefault(n, []).append(100 * tuned.results["top1"])
    print(f"{n:3d} labels per class: scratch {statistics.fmean(scores['scratch'][n]):.2f}%, "
          f"fine-tuned {statistics.fmean(scores['finetune'][n]):.2f}%")

# %%
fig, ax = plt.subplots(figsize=(6, 3.8))
for way, style in (("scratch", "s--"), ("finetune", "o-")):
    means = [statistics.fmean(scores[way][n]) for n in labels_per_class]
    ax.plot(labels_per_class, means, style, label="from scratch" if way == "scratch" else "fine-tuned")
    for n in labels_per_class:
        ax.plot([n] * len(scores[way][n]), scores[way][n], ".", color="gray")
ax.set_xscale("log")
ax.set_xticks(labels_per_class, [str(n) for n in labels_per_class])
ax.set_xlabel("labelled images per class")
ax.set_ylabel(f"test top-1 on {10 * TEST_PER_CLASS} digits (%)")
ax.legend()
fig.tight_layout()

# %%
# What we measured
# ----------------
gain = {n: statistics.fmean(scores["finetune"][n]) - statistics.fmean(scores["scratch"][n])
        for n in labels_per_class}
few, many = labels_per_class[0], labels_per_class[-1]
print(
    f"The clothes network reached {100 * pretrained.results['top1']:.2f}% on Fashion-MNIST. On "
    f"the digits, with {few} labelled images per class, fine-tuning it scored "
    f"{statistics.fmean(scores['finetune'][few]):.2f}% against {statistics.fmean(scores['scratch'][few]):.2f}% "
    f"from scratch ({gain[few]:+.1f} points); with {many} per class, "
    f"{statistics.fmean(scores['finetune'][many]):.2f}% against {statistics.fmean(scores['scratch'][many]):.2f}% "
    f"({gain[many]:+.1f} points) ({len(seeds)} seed(s), {10 * TEST_PER_CLASS} test digits, so one "
    f"digit is {100 / (10 * TEST_PER_CLASS):.1f} points). "
    + ("The fewer the labels, the more the pretrained features are worth."
       if gain[few] > max(0.0, gain[many]) else
       "Fine-tuning helped more with more labels here; more seeds would tell noise from effect."
       if gain[many] > max(0.0, gain[few]) else
       "Fine-tuning did not beat training from scratch at this size: features from a briefly "
       "pretrained clothes network, moved at the full learning rate, are no head start on "
       "digits (the full size pretrains longer)."))
shutil.rmtree(work, ignore_errors=True)
