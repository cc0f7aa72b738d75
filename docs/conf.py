"""Sphinx configuration for runfcgi_compat's documentation.

Build it with ``tox -e docs``, or from this directory::

    sphinx-build -W --keep-going -b html . _build/html

No network is used.  ``_ext/runfcgi_docs.py`` writes ``_generated/`` from the
code (option table, error messages, web server configurations) before the
pages are read.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
# tox installs the package; a plain checkout builds from the source next door.
try:
    import runfcgi_compat
except ImportError:
    sys.path.insert(0, str(HERE.parent))
    import runfcgi_compat

project = "runfcgi_compat"
author = "The runfcgi_compat authors"
copyright = "2026, " + author
release = runfcgi_compat.__version__
version = ".".join(release.split(".")[:2])

extensions = ["runfcgi_docs"]

root_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
highlight_language = "text"
nitpicky = True
# A page without a place in the table of contents is a mistake, as is a
# reference that resolves to nothing; -W turns both into errors.

html_theme = "alabaster"
html_theme_options = {
    "description": "Django 1.8's runfcgi for today's Django",
    "fixed_sidebar": False,
    "page_width": "1180px",
    "sidebar_width": "220px",
    "show_relbars": True,
}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_title = f"runfcgi_compat {release}"
html_show_sourcelink = False
