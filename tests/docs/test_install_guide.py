"""Item 17 of issue 22: an install path without make. ``pip install ".[all]"`` into a venv that
already has torch keeps that torch; docs/guide/install.md says how, with the Python version.

The install itself runs when ``RESNETLAB_TEST_PIP_INSTALL=1`` (``make test`` sets it): it builds
a venv whose packages, torch included, come from the running environment (as a user's CUDA or
conda environment would), and installs offline with the command the guide gives."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # the standard library from Python 3.11

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide" / "install.md"
OFFLINE = 'pip install --no-build-isolation --no-index ".[all]"'


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_all_extra_is_every_extra():
    extras = _pyproject()["project"]["optional-dependencies"]
    (spec,) = extras["all"]
    named = set(spec.split("[", 1)[1].rstrip("]").split(","))
    assert spec.startswith("resnetlab[") and named == set(extras) - {"all"}


def test_guide_gives_python_version_commands_and_every_extra():
    text = GUIDE.read_text()
    version = _pyproject()["project"]["requires-python"].removeprefix(">=")
    assert f"Python {version} or newer" in text
    for line in ('pip install ".[all]"', OFFLINE, "python3 -m venv .venv", "pip install torch"):
        assert line in text
    for extra in _pyproject()["project"]["optional-dependencies"]:
        assert f"| `{extra}` |" in text


@pytest.mark.skipif(os.environ.get("RESNETLAB_TEST_PIP_INSTALL") != "1",
                    reason="installs the package into a new venv; set RESNETLAB_TEST_PIP_INSTALL=1")
def test_pip_install_all_keeps_the_torch_already_there(tmp_path):
    import torch

    project = tmp_path / "project"  # a copy: the build leaves build/ and *.egg-info behind
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what pip installs
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # the existing environment (torch, pip, setuptools, the extras) is visible to the new venv
    Path(purelib, "existing-env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    argv = OFFLINE.split()[1:]
    done = subprocess.run([python, "-m", "pip", *[a.strip('"') for a in argv]], cwd=project,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Successfully installed resnetlab-0.1.0" in done.stdout
    assert "torch" not in done.stdout.split("Successfully installed", 1)[1]
    where = subprocess.run([python, "-c", "import resnetlab, torch; print(resnetlab.__file__); "
                            "print(torch.__file__)"], capture_output=True, text=True, check=True,
                           cwd=tmp_path, env=env).stdout.split()
    assert where[0].startswith(purelib) and where[1] == torch.__file__
    shown = subprocess.run([venv / "bin" / "resnetlab", "--help"], capture_output=True,
                           text=True, timeout=120, env=env)
    assert shown.returncode == 0 and "train" in shown.stdout
