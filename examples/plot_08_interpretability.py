"""
Interpretability: Grad-CAM and saliency, and their limits
=========================================================

Why did the network say "sneaker"? Two popular answers, both through captum in
:mod:`resnetlab.analysis.gradcam`:

* **Grad-CAM** (Selvaraju et al. 2017) weights a stage's feature maps by the gradient of the
  class score and keeps the positive evidence: a coarse heat map at that stage's resolution;
* **saliency** (Simonyan et al. 2014): the absolute gradient of the class score with respect to
  each input pixel.

Both are easy to over-read, so we also run two checks. The *model randomisation test*
(Adebayo et al. 2018): the same maps from an untrained network; a method whose maps hardly
change is showing the image, not the model. The *deletion test*: hide the 20% of pixels a map
ranks highest and see how much the class probability falls, against 20% chosen at random.

Quick size: ResNet-20 trained on 3,000 images for 2 epochs, 10 test images. Full size: 20,000
images for 4 epochs, 50 test images.
"""

# %%
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from resnetlab.analysis.gradcam import grad_cam, saliency
from resnetlab.analysis.runs import data_batches, load_run
from resnetlab.run import load_recipe, train

QUICK = os.environ.get("RESNETLAB_DOCS_QUICK") == "1"
work = Path(tempfile.mkdtemp(prefix="resnetlab-cam-"))
cfg = load_recipe("default")
cfg.runs_dir = str(work)
cfg.data.train_size, cfg.data.val_size = (3000, 500) if QUICK else (20000, 2000)
cfg.train.epochs = 2 if QUICK else 4
cfg.train.time_budget = None                    # these epochs, not the main job's 5 minutes
cfg.data.batch_size = 64 if QUICK else 128     # more steps for the same images in the quick size
cfg.train.tta = not QUICK                       # flip TTA doubles the test evaluation
run = train(cfg, progress=False)
trained = load_run(run.best)
net, classes = trained.model, trained.classes
print(f"ResNet-20: {100 * run.results['top1']:.2f}% test top-1")

per_class = 1 if QUICK else 5
x, y = (torch.cat(t) for t in zip(*data_batches("fashion-mnist", split="test", images=2000)[0], strict=True))
pick = torch.cat([(y == c).nonzero().flatten()[:per_class] for c in range(10)])
x, y = x[pick], y[pick]

# %%
# Maps of the trained network
# ---------------------------
cam_last, pred = grad_cam(net, x, layer="layer3", target=y)   # 7x7 feature maps, upsampled
cam_mid, _ = grad_cam(net, x, layer="layer2", target=y)       # 14x14
sal, _ = saliency(net, x, target=y)
show = list(range(0, len(x), per_class))[:10]
fig, axes = plt.subplots(4, len(show), figsize=(1.1 * len(show), 4.8))
for j, i in enumerate(show):
    rows = [("image", None), ("Grad-CAM layer3", cam_last), ("Grad-CAM layer2", cam_mid), ("saliency", sal)]
    for r, (name, maps) in enumerate(rows):
        ax = axes[r, j]
        ax.imshow(x[i, 0], cmap="gray")
        if maps is not None:
            ax.imshow(maps[i], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if j == 0:
            ax.set_ylabel(name, fontsize=7)
    axes[0, j].set_title(f"{classes[int(y[i])][:8]}\n-> {classes[int(pred[i])][:8]}", fontsize=7)
fig.tight_layout()

# %%
# Limit 1: the model randomisation test
# -------------------------------------
torch.manual_seed(0)
untrained = load_run(run.best, weights=False).model
cam_rand, _ = grad_cam(untrained, x, layer="layer3", target=y)
sal_rand, _ = saliency(untrained, x, target=y)


def similarity(a, b):
    """Mean over images of the Pearson correlation between two maps."""
    out = []
    for p, q in zip(a.flatten(1), b.flatten(1), strict=True):
        c = torch.corrcoef(torch.stack([p, q]))[0, 1]
        out.append(0.0 if torch.isnan(c) else float(c))
    return statistics.fmean(out)


same_cam, same_sal = similarity(cam_last, cam_rand), similarity(sal, sal_rand)
edge = (x[:, 0] - x[:, 0].amin((1, 2), keepdim=True)).abs()  # the image itself, as a "map"
print(f"trained vs untrained maps: Grad-CAM r = {same_cam:.2f}, saliency r = {same_sal:.2f}")
print(f"saliency vs the image itself: trained r = {similarity(sal, edge):.2f}, untrained r = {similarity(sal_rand, edge):.2f}")

fig, axes = plt.subplots(2, 4, figsize=(6, 3.2))
for j, i in enumerate(show[:2]):
    for k, (name, m) in enumerate((("CAM trained", cam_last), ("CAM untrained", cam_rand),
                                    ("saliency trained", sal), ("saliency untrained", sal_rand))):
        axes[j, k].imshow(m[i], cmap="jet", vmin=0, vmax=1)
        axes[j, k].set_axis_off()
        axes[0, k].set_title(name, fontsize=7)
fig.tight_layout()

# %%
# Limit 2: the deletion test
# --------------------------
# Hide the top 20% of pixels (set them to the image's minimum, the background) and measure the
# probability of the true class.
def probability_after_hiding(maps, frac=0.2, generator=None):
    flat = maps.flatten(1)
    k = int(frac * flat.shape[1])
    if generator is not None:
        idx = torch.stack([torch.randperm(flat.shape[1], generator=generator)[:k] for _ in flat])
    else:
        idx = flat.topk(k, dim=1).indices
    hidden = x.clone().flatten(2)
    background = hidden.amin(2, keepdim=True)
    hidden[:, 0].scatter_(1, idx, background[:, 0].expand(-1, k))
    with torch.no_grad():
        p = net(hidden.view_as(x)).softmax(1)
    return float(p[torch.arange(len(y)), y].mean())


with torch.no_grad():
    p0 = float(net(x).softmax(1)[torch.arange(len(y)), y].mean())
g = torch.Generator().manual_seed(0)
deletion = {"intact": p0, "Grad-CAM": probability_after_hiding(cam_last),
            "saliency": probability_after_hiding(sal), "random 20%": probability_after_hiding(cam_last, generator=g)}
fig, ax = plt.subplots(figsize=(5, 2.8))
ax.bar(list(deletion), list(deletion.values()), color=["gray", "#d65f5f", "#ee854a", "#4878d0"])
ax.set_ylabel("mean p(true class)")
ax.set_title("after hiding 20% of the pixels")
fig.tight_layout()

# %%
# What we measured
# ----------------
agree = float((pred == y).float().mean())
print(
    f"The network classified {100 * agree:.0f}% of the {len(y)} explained test images correctly. "
    f"Hiding the 20% of pixels Grad-CAM ranks highest lowered the mean probability of the true "
    f"class from {p0:.3f} to {deletion['Grad-CAM']:.3f}, saliency's top 20% to "
    f"{deletion['saliency']:.3f}, and 20% random pixels to {deletion['random 20%']:.3f}. "
    f"Between the trained and an untrained network, the Grad-CAM maps correlate at "
    f"r = {same_cam:.2f} and the saliency maps at r = {same_sal:.2f}; "
    + ("a high value means the map follows the image more than what the network learned, the "
       "failure Adebayo et al. 2018 warn about. " if max(same_cam, same_sal) > 0.5 else
       "both change with training, so they depend on what the network learned (the check "
       "Adebayo et al. 2018 propose). ")
    + "Grad-CAM on layer3 is a 7x7 map upsampled to 28x28: it says where, never which stroke.")
shutil.rmtree(work, ignore_errors=True)
