"""
Shipping a model: export, int8, predict (and serve)
===================================================

A trained run directory is not yet something to deploy. :func:`resnetlab.deploy.export.export_model`
writes an ONNX file with the preprocessing and class names inside it, *verifies* it against
eager PyTorch on real images, and can fold BatchNorm into the convolutions and quantise the
network to int8 (onnxruntime's static quantisation, calibrated on training images, kept only if
it loses at most half a point). :class:`resnetlab.deploy.Predictor` then predicts image files
through PyTorch or onnxruntime.

We measure what each step costs and buys: file sizes, accuracy and images per second of
resnetlab's optimised PyTorch path, onnxruntime fp32 and onnxruntime int8, on the same images. Speeds depend on
the CPU (int8 pays off on CPUs with int8 dot-product instructions) and on the machine's load
when this page was built.

Quick size: ResNet-20 trained on 2,000 images for 1 epoch, 256 images timed. Full size: the
default recipe on 20,000 images for 3 epochs, 2,048 images timed.
"""

# %%
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from resnetlab.analysis.runs import data_batches
from resnetlab.deploy import load_predictor
from resnetlab.deploy.export import export_model
from resnetlab.run import load_recipe, train
from resnetlab.run.serving import ServeConfig, build_app

QUICK = os.environ.get("RESNETLAB_DOCS_QUICK") == "1"
work = Path(tempfile.mkdtemp(prefix="resnetlab-ship-"))
cfg = load_recipe("default")
cfg.runs_dir, cfg.name = str(work), "model"
cfg.data.train_size, cfg.data.val_size = (2000, 500) if QUICK else (20000, 2000)
cfg.train.epochs = 1 if QUICK else 3
cfg.train.time_budget = None                    # these epochs, not the main job's 5 minutes
cfg.data.batch_size = 64 if QUICK else 128     # more steps for the same images in the quick size
cfg.train.tta = not QUICK                       # flip TTA doubles the test evaluation
run = train(cfg, progress=False)
print(f"trained: {100 * run.results['top1']:.2f}% test top-1")

# %%
# Export, verify, fold, quantise
# ------------------------------
result = export_model(run.run_dir, "onnx", int8=True, fold=True)
for line in result.notices:
    print(line)
check = result.check
print(f"verified on {check['inputs']} real images: max |logit difference| {check['max_abs_diff']:.2g}, "
      f"top-1 agreement {100 * check['top1_agreement']:.0f}%")
int8 = result.int8 or {}
print(f"int8: {int8}")
fp32_file = result.path
int8_file = fp32_file.with_name(int8["file"]) if int8.get("kept") else None
weights = run.best / "model.safetensors"
sizes = {"checkpoint (safetensors)": weights.stat().st_size if weights.exists() else 0,
         "ONNX fp32": fp32_file.stat().st_size}
if int8_file is not None:
    sizes["ONNX int8"] = int8_file.stat().st_size
for name, size in sizes.items():
    print(f"{name:26s} {size / 1024:8.1f} KiB")

# %%
# Predict image files, three ways
# -------------------------------
# The same PNG files through each runtime; the predictor decodes, preprocesses and batches them.
n_images = 256 if QUICK else 2048
files = []
x, y = next(iter(data_batches("fashion-mnist", split="test", images=n_images, batch_size=n_images)[0]))
raw = (x[:, 0] * 0.5 + 0.5).clamp(0, 1)        # display range only; the PNGs are new inputs
for i, img in enumerate(raw):
    path = work / "inputs" / f"{i:05d}.png"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray((img.numpy() * 255).astype(np.uint8)).save(path)
    files.append(path)

ways = {"PyTorch (folded BN)": load_predictor(run.run_dir, runtime="torch"),
        "onnxruntime fp32": load_predictor(fp32_file, runtime="onnx")}
if int8_file is not None:
    ways["onnxruntime int8"] = load_predictor(int8_file, runtime="onnx")
speed, answers = {}, {}
for name, predictor in ways.items():
    predictor.predict(files[:32], k=1)                  # warm-up
    start = time.perf_counter()
    answers[name] = [p.to_dict() for p in predictor.predict(files, k=1)]
    speed[name] = len(files) / (time.perf_counter() - start)
    print(f"{name:22s} {speed[name]:8.1f} images/s")
first = next(iter(answers))
top1 = {n: [r["topk"][0]["class"] for r in rows] for n, rows in answers.items()}
agree = {n: float(np.mean([a == b for a, b in zip(top1[n], top1[first], strict=True)])) for n in answers}

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
ax1.barh(list(sizes), [s / 1024 for s in sizes.values()], color="#4878d0")
ax1.set_xlabel("file size (KiB)")
ax2.barh(list(speed), list(speed.values()), color="#ee854a")
ax2.set_xlabel(f"images/s, {len(files)} PNG files end to end")
fig.tight_layout()

# %%
# Serve
# -----
# :func:`resnetlab.run.serving.build_app` puts the same predictor behind the HTTP API that
# ``resnetlab serve RUN`` starts (FastAPI; here in-process through its test client, no port).
# Uploads get exactly ``predict``'s preprocessing, so the server's answers must equal it.
logging.getLogger("httpx").setLevel(logging.WARNING)  # not one log line per request
with TestClient(build_app(ServeConfig(str(run.run_dir)))) as client:
    while client.get("/readyz").status_code != 200:  # loading and warm-up run in the background
        time.sleep(0.1)
    start = time.perf_counter()
    served = [client.post("/v1/predict", files={"file": (f.name, f.read_bytes(), "image/png")})
              .json()["predictions"][0]["topk"][0]["class"] for f in files]
    serve_rate = len(files) / (time.perf_counter() - start)
same = float(np.mean([a == b for a, b in zip(served, top1[first], strict=True)]))
serve_note = (f"Served over HTTP one request at a time, the same {len(files)} files ran at "
              f"{serve_rate:.0f} requests/s and {100 * same:.0f}% of the answers equal "
              f"{first}'s.")
print(serve_note)

# %%
# What we measured
# ----------------
fastest = max(speed, key=speed.get)
print(
    f"The trained ResNet-20 scored {100 * run.results['top1']:.2f}% on the test set. Its ONNX "
    f"export is {sizes['ONNX fp32'] / 1024:.0f} KiB and matched eager PyTorch on "
    f"{check['inputs']} real images to {check['max_abs_diff']:.2g} in the logits. "
    + (f"The int8 model is {sizes['ONNX int8'] / 1024:.0f} KiB "
       f"({sizes['ONNX fp32'] / sizes['ONNX int8']:.1f}x smaller) and scored "
       f"{int8['int8_accuracy']:.2f}% against fp32's {int8['fp32_accuracy']:.2f}% on "
       f"{int8['test_images']:,} test images ({int8['change_points']:+.2f} points), agreeing on "
       f"{100 * int8['top1_agreement']:.0f}% of the verification images. " if int8_file else
       f"int8 was not kept: it lost more than {int8.get('max_drop', 0.5)} points. ")
    + "On " + str(len(files)) + " PNG files end to end: "
    + ", ".join(f"{n} {v:.0f} images/s" for n, v in speed.items())
    + f"; the fastest was {fastest} ({speed[fastest] / speed['PyTorch (folded BN)']:.2f}x PyTorch), "
    f"and the runtimes agreed with PyTorch on "
    + " and ".join(f"{100 * agree[n]:.0f}% ({n})" for n in answers if n != first)
    + f" of the top-1 answers. {serve_note}")
shutil.rmtree(work, ignore_errors=True)
