"""
What really happens to gradients, layer by layer
================================================

The popular story: in a deep plain network the gradients *vanish* on their way back to the
input, the early layers stop learning, and the skip connection is a highway that carries the
gradient back. resnetlab measures it instead. :func:`resnetlab.analysis.gradflow.measure_gradflow`
runs real batches through a network (BN in training mode, as while training) and records, per
layer in depth order, the norm of the loss gradient with respect to each weight, the output scale
of each block, and the logits' spread.

We measure ResNet-20/56 and their plain twins at initialisation, twice: with batch norm (the
networks as they are built) and without any normalisation (``norm_layer=nn.Identity``).
Quick size: 64 images, 1 seed; full size: 512 images, 3 seeds (ranges over the seeds).
"""

# %%
import os
import statistics

import matplotlib.pyplot as plt
import torch
from torch import nn

from resnetlab.analysis.gradflow import describe, magnitude, measure_gradflow, summarize
from resnetlab.analysis.runs import data_batches
from resnetlab.models import create_model

QUICK = os.environ.get("RESNETLAB_DOCS_QUICK") == "1"
images, seeds = (64, 1) if QUICK else (512, 3)
batches = list(data_batches("fashion-mnist", split="train", images=images, batch_size=64)[0])
print(f"{sum(len(y) for _, y in batches)} Fashion-MNIST training images")

names = ["resnet20", "plain20", "resnet56", "plain56"]
norms = {"batch": {}, "none": {"norm_layer": nn.Identity}}
flows, summaries = {}, {}
for norm, extra in norms.items():
    for seed in range(seeds):
        for name in names:
            torch.manual_seed(seed)
            model = create_model(name, in_chans=1, num_classes=10, **extra)
            flow = measure_gradflow(model, batches, label=name)
            summaries.setdefault((norm, name), []).append(summarize(flow))
            if seed == 0:
                flows[norm, name] = flow

# %%
# Weight-gradient norm per layer
# ------------------------------
# The input is on the left. Log scale: a straight line is geometric growth or decay with depth.
fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
style = {"resnet20": ("#4878d0", "-"), "plain20": ("#4878d0", "--"),
         "resnet56": ("#d65f5f", "-"), "plain56": ("#d65f5f", "--")}
for ax, norm in zip(axes, norms, strict=True):
    for name in names:
        convs = [r for r in flows[norm, name].layers if not r["skip"] and r["type"] == "conv"]
        color, ls = style[name]
        ax.semilogy([r["index"] for r in convs], [r["weight_grad_norm"] for r in convs], ls,
                    color=color, label=name)
    ax.set_title("with batch norm" if norm == "batch" else "no normalisation")
    ax.set_xlabel("layer (input -> output)")
axes[0].set_ylabel("|dL/dW| per conv layer (seed 0)")
axes[0].legend()
fig.tight_layout()

# %%
# The forward signal: the logits' spread
# --------------------------------------
# Without normalisation the backward pass is kept in scale by the He initialisation; what goes
# wrong is the forward pass: a plain net's output shrinks, a residual net's grows with depth.
fig, ax = plt.subplots(figsize=(7, 3.5))
for i, norm in enumerate(norms):
    stds = [statistics.fmean(s["logits_std"] for s in summaries[norm, n]) for n in names]
    ax.bar([j + 0.4 * i for j in range(len(names))], stds, width=0.4,
           label="batch norm" if norm == "batch" else "no normalisation")
ax.set_yscale("log")
ax.set_xticks([j + 0.2 for j in range(len(names))], names)
ax.set_ylabel("std of the logits at init")
ax.axhline(1.0, color="gray", lw=0.8)
ax.legend()
fig.tight_layout()

# %%
# resnetlab's findings, written from the seed-0 numbers:
for norm in norms:
    print(f"[{norm}]")
    for line in describe([summaries[norm, n][0] for n in names], norm):
        print("-", line)

# %%
# What we measured
# ----------------
def ratio(norm, name):
    values = [s["first_last_ratio"] for s in summaries[norm, name]]
    return f"{magnitude(min(values))}-{magnitude(max(values))}" if len(values) > 1 else magnitude(values[0])


def std(norm, name):
    return statistics.fmean(s["logits_std"] for s in summaries[norm, name])


explode = min(s["first_last_ratio"] for s in summaries["batch", "plain56"]) > 10
print(
    f"At initialisation, on {images} images and {seeds} seed(s), the first conv layer of plain-56 "
    f"with batch norm receives {ratio('batch', 'plain56')} the weight gradient of its last conv "
    f"layer (plain-20: {ratio('batch', 'plain20')}; resnet-56: {ratio('batch', 'resnet56')}). "
    + ("So with BN the plain net's gradients grow toward the input: they explode, they do not "
       "vanish, which is where the popular story is wrong (He et al. 2015, sec. 4.1; Yang et al. "
       "2019). " if explode else
       "At this size the plain net's first/last ratio stayed below 10x. ")
    + f"Without normalisation the same ratio is {ratio('none', 'plain56')} for plain-56 and "
    f"{ratio('none', 'resnet56')} for resnet-56: the backward pass keeps its scale, but the forward "
    f"signal does not: the logits' std is {std('none', 'plain56'):.3g} for plain-56 (vanishing) and "
    f"{std('none', 'resnet56'):.3g} for resnet-56 (growing with depth), against "
    f"{std('batch', 'plain56'):.3g} and {std('batch', 'resnet56'):.3g} with batch norm.")
