"""SifWidget: the base of sif_magic's custom widgets, naming the npm module of
their front-end (``_frontend``) once; a subclass sets its model and view names.

Threads: as ipywidgets (a widget's writer is the display's pusher thread).
"""

from __future__ import annotations

import ipywidgets as widgets
from traitlets import Unicode

from ._frontend import MODULE_NAME, MODULE_VERSION


class SifWidget(widgets.DOMWidget):
    """A DOMWidget whose front-end is the ``sif-magic`` JupyterLab extension."""

    _model_module = Unicode(MODULE_NAME).tag(sync=True)
    _model_module_version = Unicode(MODULE_VERSION).tag(sync=True)
    _view_module = Unicode(MODULE_NAME).tag(sync=True)
    _view_module_version = Unicode(MODULE_VERSION).tag(sync=True)
