"""Custom widgets whose front-end is the ``sif-magic`` JupyterLab extension.

Imported only by the display layer (it imports ipywidgets). Without the
extension in the browser these widgets show an error box in place of the view,
and nothing fails on the Python side; the display layer's text fallbacks
still describe the job.
"""

from ._frontend import MODULE_NAME, MODULE_VERSION
from .callgrid import CallGrid
from .charts import RunCharts
from .logview import STDERR, STDOUT, LogView

__all__ = ["CallGrid", "LogView", "MODULE_NAME", "MODULE_VERSION", "RunCharts", "STDERR", "STDOUT"]
