"""Sphinx configuration of the xenspec documentation.

The reference part (``generated/``) is written from the specification before every build by
``xenspec.docgen.generate``; the proof and conformance status it shows comes from the cache
directory (``XENSPEC_CACHE_DIR``, by default ``.xenspec-cache`` at the top of the source tree).
"""

from __future__ import annotations

import os
from pathlib import Path

from sphinx.application import Sphinx

from xenspec import __version__
from xenspec.docgen import generate

DOCS = Path(__file__).resolve().parent

project = "xenspec"
author = "the xenspec authors"
copyright = "the xenspec authors"
version = release = __version__
extensions: list[str] = []
exclude_patterns = ["_build", "**/*.tmp"]
html_theme = "furo"
html_title = f"xenspec {__version__}"
pygments_style = "sphinx"
highlight_language = "python"


def cache_dir() -> Path:
    configured = os.environ.get("XENSPEC_CACHE_DIR")
    return Path(configured) if configured else DOCS.parent / ".xenspec-cache"


def _generate(app: Sphinx) -> None:
    generate(Path(app.srcdir) / "generated", cache_dir())


def setup(app: Sphinx) -> None:
    app.connect("builder-inited", _generate)
