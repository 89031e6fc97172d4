"""Where the widgets' front-end lives: the npm module built from labextension/."""

from __future__ import annotations

# Must match labextension/package.json ("name", "version"); tests/test_widgets.py checks.
MODULE_NAME = "sif-magic"
MODULE_VERSION = "^0.1.0"
