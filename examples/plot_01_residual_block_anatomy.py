"""
Anatomy of a residual block
===========================

A residual block computes ``out = act(F(x) + skip(x))``: a small stack of layers ``F`` (the
*branch*) whose output is added to the block's input. When the branch changes the shape (more
channels, half the resolution) the skip must change it too, and He et al. 2015 (sec. 3.3) give
three options:

* **A**: subsample the input and pad the new channels with zeros (no parameters);
* **B**: a 1x1 convolution (+ BN), the *projection*, only where the shape changes;
* **C**: a projection on every block.

This example builds the three block types resnetlab has (basic, bottleneck, pre-activation)
with each shortcut, pushes a tensor through them, counts their parameters, and then puts
ResNet-20 next to its plain twin, the same network without the additions.
Nothing is trained here, so quick and full sizes are the same.
"""

# %%
# Blocks and shortcuts
# --------------------
# Each block goes from 16 channels at 32x32 to 32 channels at 16x16 (stride 2), the situation
# where the shortcut options differ.
import matplotlib.pyplot as plt
import torch

from resnetlab.models import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    count_parameters,
    create_model,
    model_summary,
)

torch.manual_seed(0)
x = torch.randn(8, 16, 32, 32)
blocks = {"basic": (BasicBlock, 32), "bottleneck": (Bottleneck, 8), "pre-activation": (PreActBasicBlock, 32)}
rows = []
for kind, (cls, planes) in blocks.items():
    for shortcut in ("A", "B", "C"):
        if kind == "bottleneck" and shortcut == "A":
            continue  # a bottleneck widens 4x: zero-padding would be most of its output
        block = cls(16, planes, stride=2, shortcut=shortcut).eval()
        skip = block.downsample
        rows.append({
            "block": kind, "shortcut": shortcut, "out": tuple(block(x).shape[1:]),
            "params": count_parameters(block),
            "skip_params": count_parameters(skip) if skip is not None else 0,
        })
        print(f"{kind:15s} shortcut {shortcut}: {tuple(x.shape[1:])} -> {rows[-1]['out']}, "
              f"{rows[-1]['params']:,} parameters ({rows[-1]['skip_params']:,} in the skip)")

# %%
# The 1x1 projection is the price of options B and C (a few percent of a basic block, a third
# of this small bottleneck); option A adds none. The closing paragraph quotes the numbers.
fig, ax = plt.subplots(figsize=(7, 3.2))
labels = [f"{r['block']}\n{r['shortcut']}" for r in rows]
branch = [r["params"] - r["skip_params"] for r in rows]
skips = [r["skip_params"] for r in rows]
ax.bar(labels, branch, label="branch F(x)", color="#4878d0")
ax.bar(labels, skips, bottom=branch, label="skip (1x1 projection)", color="#ee854a")
ax.set_ylabel("parameters")
ax.set_title("one block, 16 -> 32 channels, stride 2")
ax.legend()
ax.tick_params(axis="x", labelsize=8)
fig.tight_layout()

# %%
# A block that starts as its skip
# -------------------------------
# ``zero_init_last()`` zeroes the scale of the branch's last BN (Goyal et al. 2017), so at
# initialisation the block *is* its shortcut: the network starts as a shallower one and
# learns the corrections.
block = BasicBlock(32, 32, stride=1, shortcut="B").eval()
y = torch.randn(4, 32, 16, 16).relu()
before = (block(y) - y).abs().max().item()
block.zero_init_last()
after = (block(y) - y).abs().max().item()
print(f"max |block(x) - x|: {before:.3f} before zero_init_last, {after:.3g} after")

# %%
# ResNet-20 and its plain twin
# ----------------------------
# The CIFAR ResNet-20 (He et al. 2015, sec. 4.2): a 3x3 stem with 16 channels, three stages of
# three basic blocks at 16, 32 and 64 channels, global average pooling and a linear head. Its
# plain twin is built by the same class with ``residual=False``: identical layers and
# parameter count (option A adds no parameters), only the additions are gone.
net = create_model("resnet20", in_chans=1, num_classes=10).eval()
twin = create_model("plain20", in_chans=1, num_classes=10).eval()
image = torch.randn(2, 1, 28, 28)
shapes = []
h = image
for name, stage in net.named_stages():
    if name == "fc":
        h = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1)
    h = stage(h)
    shapes.append((name, tuple(h.shape[1:]), count_parameters(stage)))
for name, shape, params in shapes:
    print(f"{name:7s} -> {str(shape):15s} {params:>8,} parameters")

summaries = {n: model_summary(n, in_chans=1, num_classes=10) for n in ("resnet20", "plain20", "resnet56", "plain56")}
for n, s in summaries.items():
    print(f"{n:9s} depth {s['depth']:3d}  {s['params']:>9,} parameters  {s['macs'] / 1e6:6.1f}M MACs at 32x32")

# %%
# Where the parameters sit: the later stages hold most of them (4x per doubling of the
# channels), while the early, high-resolution stages hold most of the compute.
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
names = [s[0] for s in shapes]
ax1.bar(names, [s[2] for s in shapes], color="#4878d0")
ax1.set_ylabel("parameters")
ax1.set_title("ResNet-20 per stage")
ax2.plot(names, [s[1][0] if len(s[1]) == 3 else s[1][0] for s in shapes], "o-", label="channels")
ax2.plot(names[:-1], [s[1][1] for s in shapes[:-1]], "s--", label="height = width")
ax2.set_title("activation shape after each stage (28x28 input)")
ax2.legend()
fig.tight_layout()

# %%
# What we measured
# ----------------
basic = {r["shortcut"]: r for r in rows if r["block"] == "basic"}
extra_b = basic["B"]["params"] - basic["A"]["params"]
r20, p20 = summaries["resnet20"], summaries["plain20"]
print(
    f"A basic block going from 16 to 32 channels at stride 2 has {basic['A']['params']:,} "
    f"parameters with shortcut A (zero padding); the 1x1 projection of option B adds {extra_b:,} "
    f"({100 * extra_b / basic['A']['params']:.1f}%), and option C puts one on every block. "
    f"After zero_init_last() a block differs from its input by at most {after:.3g} (it was "
    f"{before:.3f}): it starts as its skip. ResNet-20 has {r20['params']:,} parameters and its "
    f"plain twin {p20['params']:,}, both {r20['macs'] / 1e6:.1f}M multiply-accumulates per 32x32 "
    f"image; the last stage alone holds {shapes[3][2]:,} of them "
    f"({100 * shapes[3][2] / r20['params']:.0f}%). ResNet-56 has {summaries['resnet56']['params']:,}.")
