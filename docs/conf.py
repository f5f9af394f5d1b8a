"""Sphinx configuration of the resnetlab site: user guide (MyST markdown), CLI reference
(generated from the commands by ``_ext/cli_reference.py``), API reference (autodoc) and the
executed tutorial gallery (sphinx-gallery over ``examples/``).

``make docs`` builds it into ``docs/_build/html`` in quick mode (``RESNETLAB_DOCS_QUICK=1``);
``RESNETLAB_DOCS_FULL=1 make docs`` runs the examples at full size.  ``RESNETLAB_DOCS_FILTER``
(a regular expression on example paths, e.g. ``plot_01``) executes only the matching examples,
for quick iterations on one of them.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(ROOT / "src"))

import resnetlab  # noqa: E402

project = "resnetlab"
author = "the resnetlab authors"
copyright = "the resnetlab authors, Apache-2.0"  # noqa: A001 (Sphinx's name)
release = version = resnetlab.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "cli_reference",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.md5", "auto_examples/*.json",
                    "sg_execution_times.rst"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "furo"
html_title = f"resnetlab {release}"
html_static_path: list[str] = []
html_show_sourcelink = False

# The docstrings are written for readers of the code: ``name`` is a literal, not a reference.
default_role = "literal"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": False}
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
suppress_warnings = ["config.cache"]  # sphinx-gallery's conf holds callables
nitpicky = False

QUICK = os.environ.get("RESNETLAB_DOCS_QUICK") == "1"
GALLERY = HERE / "auto_examples"


def _fresh_gallery_for_mode() -> None:
    """sphinx-gallery re-executes only changed examples; a quick build after a full one (or the
    reverse) would keep the other size's figures, so the generated gallery is dropped when the
    mode changes."""
    mode = "quick" if QUICK else "full"
    stamp = GALLERY / ".mode"
    if GALLERY.exists() and (not stamp.exists() or stamp.read_text() != mode):
        shutil.rmtree(GALLERY)
    GALLERY.mkdir(exist_ok=True)
    stamp.write_text(mode)


_fresh_gallery_for_mode()

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": str(GALLERY),
    "filename_pattern": os.environ.get("RESNETLAB_DOCS_FILTER", r"/plot_"),
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,  # a broken example fails the build (and CI)
    "remove_config_comments": True,
    "show_memory": False,
    "download_all_examples": False,
    "write_computation_times": True,
    "capture_repr": (),
}
