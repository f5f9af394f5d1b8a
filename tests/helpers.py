"""Shared test helpers (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from resnetlab.data import build_data
from resnetlab.engine import RunConfig, fit
from resnetlab.engine.config import DataConfig
from resnetlab.utils.seed import seeded_generator

_RUN_SIDE = ("seed", "device", "channels_last", "in_chans")


def build(name: str, **kwargs: Any):
    """``build_data`` with a ``DataConfig(name=name, ...)`` built from ``kwargs``; ``seed``,
    ``device``, ``channels_last`` and ``in_chans`` go to ``build_data`` itself."""
    run = {k: kwargs.pop(k) for k in _RUN_SIDE if k in kwargs}
    return build_data(DataConfig(name=name, **kwargs), **run)


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``resnetlab ARGV`` in-process; returns (exit status, stdout, stderr)."""
    from resnetlab.cli.app import main

    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """The one ``error: ...`` line a user error prints (anything more fails the test)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- the headless browser of the report tests (Debian's chromium + chromium-driver) ---------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-headless-shell")
DRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (`make test` installs them)")


def render_in_chromium(page: Path, profile: Path) -> tuple[list[int], str, list[dict]]:
    """Load ``page`` in headless chromium: (each image's naturalWidth, or -1 if not decoded;
    the rendered body text; the SEVERE console messages)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (pip extra 'analysis')")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(page.resolve().as_uri())
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1)")
        text = driver.find_element(By.TAG_NAME, "body").text
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    return widths, text, errors


# --- Fashion-MNIST from Debian's dataset-fashion-mnist, and the tiny CLI network -------------
FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")

# A network small enough that a run (including the 10k-image test evaluation) takes seconds on
# two shared cores: the MLP-ResNet at 1/16 width (64 units, 32 in the bottleneck) with two
# blocks, on 512 training images.  The conv path is covered by test_resume_sigkill.py.
TINY = ["--model", "mlp_resnet", "--width-mult", "0.0625", "--set", "num_blocks=2",
        "--train-size", "512", "--val-size", "256", "--batch-size", "64", "--device", "cpu",
        "--no-download", "--no-progress"]


class Exploit:
    """A pickle payload that runs ``touch MARKER`` when unpickled: loaders must refuse it, and the
    marker file must never appear."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


# ---- tiny image folders and the runs on them (tests/run, tests/analysis, ...) ----

CLASSES = ("ant", "bee", "cat")


def write_folder(root: Path, classes=CLASSES, per_class: int = 12, seed: int = 0) -> Path:
    """Grey 8x8 images whose brightness depends on the class *name* (so any folder that holds a
    class gets images that look alike)."""
    rng = np.random.default_rng(seed)
    for name in classes:
        level = 40 + 80 * (sum(map(ord, name)) % 3)
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(level, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def write_grey_classes(root: Path, per_class: int, side: int) -> Path:
    """4 classes c0-c3 of grey ``side`` x ``side`` images whose brightness depends on the class
    (noisy: a small ResNet needs a few epochs to separate them)."""
    rng = np.random.default_rng(0)
    for c in range(4):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(50 + 45 * c, 40, (side, side)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    return root


FLAGS = ["--model", "mlp_resnet", "--width-mult", "0.0625", "--set", "num_blocks=1",
         "--batch-size", "8", "--epochs", "2", "--device", "cpu", "--precision", "fp32",
         "--deterministic", "--no-progress", "--no-tta", "--seed", "3"]


def write_table(path: Path, rows: int = 128) -> Path:
    """A CSV table: 4 noisy features whose mean depends on the class (4 classes, k0-k3)."""
    gen = torch.Generator().manual_seed(0)
    lines = ["a,b,c,d,label"]
    for i in range(rows):
        x = torch.randn(4, generator=gen) + (i % 4)
        lines.append(",".join(f"{v:.4f}" for v in x.tolist()) + f",k{i % 4}")
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_config(data: Path, runs: Path, name: str):
    """The same run as ``resnetlab train`` with FLAGS, built in Python."""
    from resnetlab import run

    cfg = run.load_recipe("default")
    cfg.model.name, cfg.model.kwargs = "mlp_resnet", {"width_mult": 0.0625, "num_blocks": 1}
    cfg.data.name, cfg.data.batch_size = f"folder:{data}", 8
    cfg.train.epochs, cfg.train.device, cfg.train.precision = 2, "cpu", "fp32"
    cfg.train.time_budget = None  # --epochs replaces the recipe's budget
    cfg.train.deterministic, cfg.train.tta, cfg.train.seed = True, False, 3
    cfg.runs_dir, cfg.name = str(runs), name
    return cfg


# ---- the engine's own tiny problem: four blobs, a small conv net, fit (tests/engine) ----

NUM_CLASSES = 4


def blobs(n: int, seed: int = 0, spread: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """Four well-separated classes of 2x6x6 "images": class c shifts one channel up or down."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % NUM_CLASSES
    shift = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])[y]
    x = spread * torch.randn(n, 2, 6, 6, generator=g) + shift[:, :, None, None]
    return x, y


class SeededLoader:
    """Mimics resnetlab's in-memory loader: order and noise depend only on (seed, epoch, batch)."""

    def __init__(self, x, y, batch_size: int, seed: int = 0, noise: float = 0.1):
        self.x, self.y, self.bs, self.seed, self.noise = x, y, batch_size, seed, noise

    def __len__(self) -> int:
        return len(self.y) // self.bs

    def epoch(self, epoch: int, start: int = 0):
        order = torch.randperm(len(self.y), generator=seeded_generator(self.seed, epoch))
        for b in range(start, len(self)):
            idx = order[b * self.bs:(b + 1) * self.bs]
            jitter = torch.randn(self.x[idx].shape, generator=seeded_generator(self.seed, epoch, b))
            yield self.x[idx] + self.noise * jitter.to(self.x.device), self.y[idx]

    def __iter__(self):
        return self.epoch(0)


class CrashAfter:
    """A loader that raises after ``n`` batches in total, like a run killed mid-epoch."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int, start: int = 0):
        for batch in self.loader.epoch(epoch, start):
            if self.n == 0:
                raise KeyboardInterrupt("simulated kill")
            self.n -= 1
            yield batch


class GlobalMean(nn.Module):
    """Global average pool as a reduction (AdaptiveAvgPool2d's CUDA backward is not deterministic)."""

    def forward(self, x):
        return x.mean((2, 3))


def small_net(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Dropout(dropout), GlobalMean(), nn.Linear(8, NUM_CLASSES))


def loop_config(**train) -> RunConfig:
    """A tiny engine-level config: cosine, cpu fp32, 3 epochs unless ``train`` says."""
    cfg = RunConfig()
    cfg.optim.lr = 0.1
    cfg.schedule.name = "cosine"
    cfg.schedule.warmup_frac = 0.1
    cfg.train.device = "cpu"
    cfg.train.precision = "fp32"
    cfg.train.log_every = 5
    for key, value in {"epochs": 3, **train}.items():
        setattr(cfg.train, key, value)
    return cfg


def loop_run(tmp_path, cfg, train=None, val=None, model=None, name="run", **kw):
    """``fit`` a :func:`small_net` on :func:`blobs`; returns (model, FitResult)."""
    x, y = blobs(256)
    train = train if train is not None else SeededLoader(x, y, 32)
    val = val if val is not None else [blobs(64, seed=1)]
    model = model if model is not None else small_net()
    result = fit(model, train, val, cfg, tmp_path / name, num_classes=NUM_CLASSES,
                 extra_meta={"classes": list("abcd"), "model": {"name": "small"}}, progress=False, **kw)
    return model, result


class NaNAfter(nn.Module):
    """Wraps a model and makes its output NaN from forward call ``start`` on."""

    def __init__(self, model, start: int):
        super().__init__()
        self.model, self.start, self.calls = model, start, 0

    def forward(self, x):
        out = self.model(x)
        if self.training:
            self.calls += 1
            if self.calls > self.start:
                out = out * float("nan")
        return out


def budget_loader():
    """512 blobs in batches of 8: 64 steps an epoch (the time-budget tests' data)."""
    x, y = blobs(512)
    return SeededLoader(x, y, 8)


def budget_plan(cfg: RunConfig):
    """``cfg`` planned on :func:`budget_loader` for a classification with validation."""
    from resnetlab.engine.plan import make_plan
    from resnetlab.engine.task import Classification

    return make_plan(cfg, budget_loader(), task=Classification(NUM_CLASSES), has_val=True)
