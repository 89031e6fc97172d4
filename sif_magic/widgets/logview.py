"""LogView: the stdout/stderr lines and traceback of a call, rendered in the browser.

The front-end adds what needs no kernel round trip: a search box that filters
and highlights lines, and a follow toggle that keeps the newest lines in view
(scrolling up turns it off). The mode dropdown ("call", "all", "failures") is a
synced trait; the kernel reacts to it through :meth:`LogView.on_mode_change`.
Widget messages wait while a blocking cell runs, so the front-end of a view made
with ``via_control=True`` tells another mode on the kernel's control channel
(``widgets._control``): ``answer_control`` calls the callbacks, whose owner then
sets ``mode`` (a job view's pusher does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as widgets
from traitlets import Bool, Enum, Int, List, Unicode

from . import _control
from ._frontend import MODULE_NAME, MODULE_VERSION

__all__ = ["LogView", "MODES", "STDOUT", "STDERR"]

STDOUT = 1
STDERR = 2
MODES = ("call", "all", "failures")


class LogView(widgets.DOMWidget):
    """Shows log entries ``(stream, text)``; stream 1 is stdout, 2 is stderr (red)."""

    _model_name = Unicode("LogViewModel").tag(sync=True)
    _model_module = Unicode(MODULE_NAME).tag(sync=True)
    _model_module_version = Unicode(MODULE_VERSION).tag(sync=True)
    _view_name = Unicode("LogViewView").tag(sync=True)
    _view_module = Unicode(MODULE_NAME).tag(sync=True)
    _view_module_version = Unicode(MODULE_VERSION).tag(sync=True)

    title = Unicode("", help="Heading, e.g. 'call 17 · failed'.").tag(sync=True)
    entries = List(help="Log entries as [stream, text] pairs.").tag(sync=True)
    traceback = Unicode("", help="Traceback shown after the lines.").tag(sync=True)
    dropped = Int(0, help="Bytes dropped from the start of the log buffer.").tag(sync=True)
    mode = Enum(MODES, default_value="call", help="Which lines: one call, all, failures.").tag(
        sync=True
    )
    follow = Bool(True, help="Keep the newest lines in view.").tag(sync=True)
    via_control = Bool(
        False,
        help="Another mode is told on the kernel's control channel (answered while a cell "
        "runs); it then only calls on_mode_change, whose owner sets `mode`.",
    ).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._mode_callbacks: dict[Callable[[str], Any], Callable[[Any], None]] = {}
        _control.listen(self)

    def show(
        self,
        title: str,
        entries: Iterable[tuple[int, str]],
        traceback: str = "",
        dropped: int = 0,
    ) -> None:
        """Replace what the view shows (one message, whatever changed)."""
        rows = [[int(stream), str(text)] for stream, text in entries]
        with self.hold_sync():
            self.title = str(title)
            self.entries = rows
            self.traceback = traceback or ""
            self.dropped = max(0, int(dropped))

    def resend(self) -> None:
        """Send what the view shows again (after updates the server may have dropped)."""
        self.send_state(["title", "entries", "traceback", "dropped"])

    def clear(self) -> None:
        self.show("", [])

    def on_mode_change(self, callback: Callable[[str], Any], remove: bool = False) -> None:
        """Call ``callback(mode)`` when the user picks another mode (``remove=True`` unregisters)."""
        if remove:
            handler = self._mode_callbacks.pop(callback, None)
            if handler is not None:
                self.unobserve(handler, names="mode")
            return

        def handler(change: Any) -> None:
            callback(change["new"])

        self._mode_callbacks[callback] = handler
        self.observe(handler, names="mode")

    def answer_control(self, op: str, content: dict[str, Any]) -> dict[str, Any]:
        """Another mode picked, told on the control channel (``widgets._control``):
        on a view made with ``via_control=True`` the ``on_mode_change`` callbacks
        are called and ``mode`` is left to whoever follows them; else the reply is
        an error (the front-end then sends the widget message)."""
        mode = content.get("mode")
        if op != "mode" or mode not in MODES:
            return {"error": f"a log view answers 'mode' with one of {', '.join(MODES)}"}
        if not (self.via_control and self._mode_callbacks):
            return {"error": "this log view's mode is not told on the control channel"}
        for callback in list(self._mode_callbacks):
            callback(mode)
        return {"mode": mode}

    def __repr__(self) -> str:
        return f"LogView(title={self.title!r}, entries={len(self.entries)}, mode={self.mode!r})"
