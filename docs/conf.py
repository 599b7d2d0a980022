"""Sphinx configuration of softlab's documentation site.

Build: `python -m sphinx -W -b html docs docs/_build/html` (the `docs` extra).
The API pages (one per module), the registry tables and the studies' pages
are generated at build time by `_ext/softlab_pages.py` from the installed
code, so new modules, registered names and studies appear without editing.
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "_ext"))

project = "softlab"
author = "softlab authors"
copyright = "softlab authors"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
    "softlab_pages",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "README.md"]
# Formulas are plain text in the docstrings: keep quotes and dashes as written.
smartquotes = False
autodoc_member_order = "bysource"
# The docstrings give shapes and meanings; the array type unions add only noise.
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_custom_sections = [("Normalizer fields", "params_style")]
# `name` in a docstring is code.
default_role = "literal"
# NNX modules hide __init__'s signature behind their metaclass: show it separately.
autodoc_class_signature = "separated"
html_theme = "alabaster"
html_static_path = ["_static"]
html_css_files = ["softlab.css"]
html_title = "softlab"
html_theme_options = {"page_width": "1180px", "sidebar_width": "260px"}
myst_heading_anchors = 3
