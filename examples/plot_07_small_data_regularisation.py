"""
Over-fitting on small data, and what regularisation does about it
=================================================================

With few training images a ResNet memorises them: training accuracy climbs toward 100% while
validation accuracy stalls, and the gap between the two is the over-fitting. Three classic
remedies are one setting each in resnetlab:

* **weight decay** (``optim.weight_decay``, ``--weight-decay``): pulls weights toward zero;
* **dropout** (``model.kwargs["drop_rate"]``, ``--drop-rate``): drops features before the head;
* **augmentation** (``data.augment``, ``--augment crop:2,flip``): new views of the same images.

We train the same ResNet-20 on a small stratified subset of Fashion-MNIST five times, with no
regularisation, with each remedy alone, and with all three, and compare the train-validation
gap and the test accuracy.

Quick size: 500 images, 8 epochs, half-width network. Full size: 1,000 images, 30 epochs,
full width.
"""

# %%
import os
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from resnetlab.analysis import read_metrics
from resnetlab.run import load_recipe, train

QUICK = os.environ.get("RESNETLAB_DOCS_QUICK") == "1"
work = Path(tempfile.mkdtemp(prefix="resnetlab-overfit-"))

variants = {
    "none": {},
    "weight decay": {"weight_decay": 5e-3},
    "dropout": {"drop_rate": 0.5},
    "augmentation": {"augment": "crop:2,flip"},
}
variants["all three"] = {k: v for d in variants.values() for k, v in d.items()}

runs = {}
for label, change in variants.items():
    cfg = load_recipe("compare-quick")       # no augmentation, no label smoothing to start from
    cfg.runs_dir, cfg.name = str(work), label.replace(" ", "-")
    cfg.data.train_size, cfg.data.val_size = (500, 1000) if QUICK else (1000, 2000)
    cfg.data.batch_size, cfg.optim.lr = 32, 0.05
    cfg.train.epochs = 8 if QUICK else 30
    cfg.optim.weight_decay = change.get("weight_decay", 0.0)
    cfg.data.augment = change.get("augment", "none")
    cfg.model.kwargs = {"drop_rate": change.get("drop_rate", 0.0)}
    if QUICK:
        cfg.model.kwargs["width_mult"] = 0.5
    runs[label] = train(cfg, progress=False)
    metrics = [r for r in read_metrics(runs[label].run_dir / "metrics.csv") if r.get("val_top1") is not None]
    runs[label].curve = metrics
    print(f"{label:13s} train {100 * metrics[-1]['train_top1']:.1f}%  val {100 * metrics[-1]['val_top1']:.1f}%  "
          f"test {100 * runs[label].results['top1']:.2f}%")

# %%
# Training vs validation accuracy over the epochs
# -----------------------------------------------
fig, axes = plt.subplots(1, len(runs), figsize=(12, 3), sharey=True)
for ax, (label, run) in zip(axes, runs.items(), strict=True):
    epochs = [r["epoch"] for r in run.curve]
    ax.plot(epochs, [100 * r["train_top1"] for r in run.curve], "-", label="train")
    ax.plot(epochs, [100 * r["val_top1"] for r in run.curve], "--", label="validation")
    ax.set_title(label)
    ax.set_xlabel("epoch")
axes[0].set_ylabel("accuracy (%)")
axes[0].legend()
fig.tight_layout()

# %%
# The gap and the test accuracy
# -----------------------------
gap = {k: 100 * (r.curve[-1]["train_top1"] - r.curve[-1]["val_top1"]) for k, r in runs.items()}
test = {k: 100 * r.results["top1"] for k, r in runs.items()}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
ax1.barh(list(gap), list(gap.values()), color="#ee854a")
ax1.set_xlabel("final train - validation accuracy (points)")
ax2.barh(list(test), list(test.values()), color="#4878d0")
ax2.set_xlim(min(test.values()) - 5, max(test.values()) + 2)
ax2.set_xlabel("test top-1 (%), 10,000 images")
fig.tight_layout()

# %%
# What we measured
# ----------------
best = max(test, key=test.get)
smallest = min(gap, key=gap.get)
first = runs["none"].config
print(
    f"On {first.data.train_size:,} training images and {first.train.epochs} epochs, the "
    f"unregularised ResNet-20 ended {gap['none']:.1f} points better on its training images than "
    f"on validation and scored {test['none']:.2f}% on the test set. Weight decay gave a gap of "
    f"{gap['weight decay']:.1f} points and {test['weight decay']:.2f}%, dropout {gap['dropout']:.1f} "
    f"and {test['dropout']:.2f}%, augmentation {gap['augmentation']:.1f} and "
    f"{test['augmentation']:.2f}%, all three {gap['all three']:.1f} and {test['all three']:.2f}%. "
    f"The smallest gap was '{smallest}', the best test accuracy '{best}' "
    f"({test[best] - test['none']:+.2f} points over none). A smaller gap is not by itself a better "
    f"model: a regulariser that also slows training shrinks the gap from both sides.")
shutil.rmtree(work, ignore_errors=True)
