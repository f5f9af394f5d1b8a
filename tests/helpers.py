"""Shared test helpers (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from resnetlab.data import build_data
from resnetlab.engine.config import DataConfig

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
