"""Sphinx configuration: the kalmanjax documentation site (built offline).

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (CI does
this, so any warning fails it). The notebooks are rendered from their committed,
executed ``.ipynb`` (not re-run); the how-to pages are executed at build time, so
their code is checked by every build.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))

project = "kalmanjax"
author = "the kalmanjax developers"
copyright = "2026, the kalmanjax developers"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # a local copy of MathJax 3: the site needs no network
    "kj_api",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = "kalmanjax"
html_static_path: list[str] = []

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

# the notebooks keep the outputs they were committed with; the how-tos run
nb_execution_mode = "force"
nb_execution_excludepatterns = ["notebooks/*"]
nb_execution_raise_on_error = True
nb_execution_timeout = 600
nb_merge_streams = True

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_attr_annotations = False  # jaxtyping strings ("*batch") are not reST


def _copy_notebooks(app) -> None:
    """Copy the executed notebooks into the source tree (``docs/notebooks``)."""
    target = DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        dest = target / nb.name
        if not dest.exists() or dest.read_bytes() != nb.read_bytes():
            shutil.copyfile(nb, dest)


def setup(app):
    """Copy the notebooks in before Sphinx looks for its sources."""
    app.connect("builder-inited", _copy_notebooks)
