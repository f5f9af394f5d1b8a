"""
The dense residual block, on a real table
=========================================

The explainer's dense residual block is ``Dense(1024) -> Dropout -> Dense(512) -> Dense(1024)
-> Add``: a wide layer ``h``, a bottleneck branch that reads it, and the sum of the two. In
resnetlab it is :class:`~resnetlab.models.DenseResidualBlock`; stacking them gives the
MLP-ResNet (``mlp_resnet``), and ``residual=False`` gives its plain twin (``plain_mlp``).

We take the block apart, then train both networks on a real table, scikit-learn's
handwritten digits (1,797 rows, 64 pixel columns), at growing depth, with
:func:`resnetlab.run.compare` (``dense=True``: the depths are block counts).

Quick size: 1, 4 and 12 blocks, 6 epochs, 1 seed. Full size: 2, 8 and 32 blocks, 15 epochs,
2 seeds.
"""

# %%
# The block
# ---------
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits

from resnetlab.analysis import read_metrics
from resnetlab.models import DenseResidualBlock, count_parameters
from resnetlab.run import compare, load_recipe

block = DenseResidualBlock(1024, width=1024, bottleneck_width=512, drop_rate=0.1).eval()
x = torch.randn(4, 1024)
trace = [("input", tuple(x.shape[1:]))]
h = block.act_in(block.norm_in(block.fc_in(x)))
trace.append(("h = Dense(1024)", tuple(h.shape[1:])))
b = block.act1(block.norm1(block.fc1(block.dropout(h))))
trace.append(("Dropout -> Dense(512)", tuple(b.shape[1:])))
b = block.norm2(block.fc2(b))
trace.append(("Dense(1024)", tuple(b.shape[1:])))
out = block.act_out(b + block.downsample(h))
trace.append(("Add h, ReLU", tuple(out.shape[1:])))
assert torch.allclose(out, block(x))      # the same as the block's own forward
for step, shape in trace:
    print(f"{step:24s} {shape}")
print(f"{count_parameters(block):,} parameters in one block")

# %%
# A real table
# ------------
QUICK = os.environ.get("RESNETLAB_DOCS_QUICK") == "1"
work = Path(tempfile.mkdtemp(prefix="resnetlab-dense-"))
digits = load_digits()
lines = [",".join(f"{v:g}" for v in pixels) + f",{label}" for pixels, label in zip(digits.data, digits.target, strict=True)]
header = ",".join(f"px{i}" for i in range(digits.data.shape[1])) + ",digit"
(work / "digits.csv").write_text("\n".join([header, *lines]) + "\n")
n_rows = len(lines)
print(f"{n_rows} rows, {digits.data.shape[1]} feature columns, target 'digit'")

cfg = load_recipe("compare-quick")
cfg.data.name, cfg.data.target = f"csv:{work / 'digits.csv'}", "digit"
cfg.data.train_size = cfg.data.val_size = None     # the table's own 90/10 split
cfg.data.augment = None                             # tables are never augmented
cfg.data.batch_size, cfg.optim.lr = 128, 0.1
cfg.model.kwargs = {"width": 128, "bottleneck_width": 64, "drop_rate": 0.0}
cfg.runs_dir = str(work)
blocks, seeds = ([1, 4, 12], 1) if QUICK else ([2, 8, 32], 2)
cfg.train.epochs = 6 if QUICK else 15
# A 128-wide MLP's layers are too small to split over threads: one thread is faster (and
# unaffected by other processes on the cores).
threads = torch.get_num_threads()
torch.set_num_threads(1)
result = compare(cfg, depths=blocks, seeds=seeds, dense=True, progress=False)
torch.set_num_threads(threads)

# %%
# Training and validation error as depth grows
# --------------------------------------------
err = {}
for run in result.members:
    family = "plain" if run.config.model.name.startswith("plain") else "resnet"
    rows = [r for r in read_metrics(run.run_dir / "metrics.csv") if r.get("train_top1") is not None]
    one = {"final_train_err": 1 - rows[-1]["train_top1"],
           "best_val_err": 1 - max(r["val_top1"] for r in rows)}
    err.setdefault((family, run.config.model.kwargs["num_blocks"]), []).append(one)
err = {k: {m: statistics.fmean(v[m] for v in vs) for m in vs[0]} for k, vs in err.items()}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5), sharex=True)
for family, style in (("resnet", "o-"), ("plain", "s--")):
    ax1.plot(blocks, [100 * err[family, n]["final_train_err"] for n in blocks], style,
             label="MLP-ResNet" if family == "resnet" else "plain MLP")
    ax2.plot(blocks, [100 * err[family, n]["best_val_err"] for n in blocks], style)
ax1.set_ylabel("final training error (%)")
ax2.set_ylabel("best validation error (%)")
for ax in (ax1, ax2):
    ax.set_xscale("log", base=2)
    ax.set_xticks(blocks, [str(n) for n in blocks])
    ax.set_xlabel("dense blocks")
ax1.legend()
fig.tight_layout()

# %%
for line in result.findings:
    print("-", line)

# %%
# What we measured
# ----------------
deep, shallow = blocks[-1], blocks[0]
tr = {k: 100 * v["final_train_err"] for k, v in err.items()}
print(
    f"One dense residual block at the explainer's sizes has {count_parameters(block):,} "
    f"parameters. On the digits table ({n_rows:,} rows; {seeds} seed(s), {cfg.train.epochs} "
    f"epochs), the plain MLP's final training error went from {tr['plain', shallow]:.2f}% with "
    f"{shallow} block(s) to {tr['plain', deep]:.2f}% with {deep}; the MLP-ResNet's from "
    f"{tr['resnet', shallow]:.2f}% to {tr['resnet', deep]:.2f}%. Best validation error at "
    f"{deep} blocks: plain {100 * err['plain', deep]['best_val_err']:.2f}%, residual "
    f"{100 * err['resnet', deep]['best_val_err']:.2f}%. "
    + ("The residual net degraded less with depth than its plain twin."
       if tr["resnet", deep] - tr["resnet", shallow] < tr["plain", deep] - tr["plain", shallow]
       else "Here the residual net did not degrade less than its plain twin: each dense block "
            "puts an un-skipped Dense + norm + ReLU (h) in front of its branch, so a deep "
            "MLP-ResNet still has a long plain path."))
shutil.rmtree(work, ignore_errors=True)
