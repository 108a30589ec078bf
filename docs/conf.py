"""Sphinx configuration of mixvae's documentation site (``python -m sphinx -W -b html docs docs/_build/html``).

The pages of the parts (one per prior, guide and likelihood, with its
generative story and options), the API reference of every public module and
the tutorials (copied from ``notebooks/``) are generated here from the
registries and ``__all__`` at build time, so they cannot drift from the code.
``MIXVAE_DOCS_EXECUTE=force`` executes the tutorials (in smoke mode when
``CI`` is set), so the site shows their outputs.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import mixvae  # noqa: E402
from docs.generate import generate  # noqa: E402

project = "mixvae"
release = version = mixvae.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_nb"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "generate.py"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = False
nb_execution_mode = os.environ.get("MIXVAE_DOCS_EXECUTE", "off")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
html_theme = "alabaster"
myst_heading_anchors = 3

# The tutorials look for MNIST relative to notebooks/; executed from their copies in
# _generated/tutorials they are told where it is (the kernel inherits this environment).
os.environ.setdefault("MIXVAE_MNIST_DIR", str(ROOT.parent / "shared" / "data" / "mnist"))

shutil.rmtree(HERE / "_generated", ignore_errors=True)
generate(HERE / "_generated")
