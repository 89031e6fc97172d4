"""Where the widgets' front-end lives: the npm module built from labextension/.

``frontend_missing()`` says whether the JupyterLab extension is known to be
absent: this kernel's environment holds the Jupyter server (jupyterlab is
importable here) and no ``labextensions/sif-magic`` folder is on its data path
(a source install without Node.js leaves it out). Then a job's view leaves out
the grid and the log viewer, which the front-end could only show as errors, and
says how to get them. When the server runs elsewhere (a JupyterHub with the
kernel in another environment), nothing here can tell: the widgets are shown.
``SIF_MAGIC_FRONTEND=0|1`` overrides the guess. Any thread; no state.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# Must match labextension/package.json ("name", "version"); tests/test_widgets.py checks.
MODULE_NAME = "sif-magic"
MODULE_VERSION = "^0.1.0"

MISSING_HINT = (
    "The per-call grid and log viewer need sif_magic's JupyterLab extension, which this "
    "install lacks (built without Node.js): install the wheel (scripts/build-wheel makes "
    "it), or reinstall with Node.js. %sif_logs prints any call's output meanwhile."
)


def frontend_missing() -> bool:
    """True when the JupyterLab extension is known not to be installed (see above)."""
    forced = os.environ.get("SIF_MAGIC_FRONTEND", "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return True
    if forced in ("1", "true", "yes", "on"):
        return False
    if importlib.util.find_spec("jupyterlab") is None:
        return False  # the server runs elsewhere: it may well have the extension
    try:
        from jupyter_core.paths import jupyter_path
    except ImportError:
        return False
    return not any(
        (Path(d) / MODULE_NAME / "package.json").is_file() for d in jupyter_path("labextensions")
    )
