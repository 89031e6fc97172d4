"""CallGrid: one cell per call coloured by state, drawn on a canvas in the browser.

Transport: the whole state table (one byte per call, codes of
``sif_magic.protocol.STATE_NAMES``) travels as one zlib-compressed binary trait,
``states_z``. A run's table is mostly long runs of one state, so 100,000 calls
compress to a few hundred bytes, and because it is an ordinary synced trait the
newest table is also what a reloaded page or a saved notebook gets: a dropped
update is repaired by the next one. ``set_states`` sends nothing when the table
did not change, so the caller's push rate is the message rate.

Calls that reported how far they are (``sif_magic.report``) travel in
``progress``, ``{index: [fraction, message]}`` of the calls still running (a
handful: one per busy slot): the front-end fills that part of their cell and
shows the message in its own tooltip, which needs no kernel round trip.

Hover text comes from ``describe(i)``: the front-end asks by custom message
(``{"type": "describe", "index": i}``) and gets ``{"type": "description", ...}``
back. Widget messages wait while a blocking cell runs, so the front-end asks
for the hover text and tells a click on the kernel's control channel when the
grid was made with ``via_control=True`` (``widgets._control``):
``answer_control`` gives the text, or calls the ``on_select`` callbacks, whose
owner then sets ``selected`` (a job view's pusher does).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
from traitlets import Bool, Bytes, Dict, Int, Unicode

from ..protocol import STATE_NAMES
from . import _control
from ._frontend import MODULE_NAME, MODULE_VERSION

log = logging.getLogger(__name__)

__all__ = ["CallGrid"]

# zlib level 1: ~0.3 ms for 100,000 calls, within a few % of level 9 on state tables.
_LEVEL = 1
MAX_SHOWN_MESSAGE = 120  # characters of a reported message the grid's own tooltip shows


def _default_describe(states: bytes, index: int) -> str:
    code = states[index] if index < len(states) else 0
    name = STATE_NAMES[code] if code < len(STATE_NAMES) else f"state {code}"
    return f"call {index} · {name}"


class CallGrid(widgets.DOMWidget):
    """A per-call state grid for ``n`` calls.

    ``describe(i)`` returns the hover text of call ``i`` (index, state, worker,
    duration, ...). ``selected`` is the index of the call the user clicked, or -1.
    """

    _model_name = Unicode("CallGridModel").tag(sync=True)
    _model_module = Unicode(MODULE_NAME).tag(sync=True)
    _model_module_version = Unicode(MODULE_VERSION).tag(sync=True)
    _view_name = Unicode("CallGridView").tag(sync=True)
    _view_module = Unicode(MODULE_NAME).tag(sync=True)
    _view_module_version = Unicode(MODULE_VERSION).tag(sync=True)

    n = Int(0, help="Number of calls (cells in the grid).").tag(sync=True)
    states_z = Bytes(b"", help="zlib-compressed state table, one byte per call.").tag(sync=True)
    selected = Int(-1, help="Index of the clicked call, -1 for none.").tag(sync=True)
    progress = Dict(
        {}, help="Running calls that reported progress: index -> [fraction, message]."
    ).tag(sync=True)
    via_control = Bool(
        False,
        help="Clicks and hovers are asked on the kernel's control channel (answered while a "
        "cell runs); a click then only calls on_select, whose owner sets `selected`.",
    ).tag(sync=True)

    def __init__(self, n: int, describe: Callable[[int], str] | None = None, **kwargs: Any) -> None:
        if n < 0:
            raise ValueError(f"CallGrid needs n >= 0 calls, got {n}")
        states = bytes(n)  # all queued
        super().__init__(n=n, states_z=zlib.compress(states, _LEVEL), **kwargs)
        self._states = states
        self._describe = describe
        self._select_callbacks: dict[Callable[[int], Any], Callable[[Any], None]] = {}
        #: Version of the front-end module, once a view of this widget has rendered.
        self.frontend_version: str | None = None
        #: How many state tables were sent (for tests and benchmarks).
        self.updates_sent = 0
        self.on_msg(self._on_frontend_msg)
        _control.listen(self)

    @property
    def states(self) -> bytes:
        """The state table last given to :meth:`set_states`."""
        return self._states

    def set_states(self, states: bytes | bytearray | memoryview) -> bool:
        """Show ``states`` (one byte per call); returns False when nothing changed.

        A table of another length than ``n`` resizes the grid.
        """
        data = bytes(states)
        if data == self._states:
            return False
        self._states = data
        with self.hold_sync():
            if len(data) != self.n:
                self.n = len(data)
            self.states_z = zlib.compress(data, _LEVEL)
        self.updates_sent += 1
        return True

    def set_progress(self, reports: dict[int, tuple[float, str]]) -> bool:
        """Show what running calls reported (``{index: (fraction, message)}``);
        returns False when nothing changed."""
        shown = {
            str(i): [round(float(f), 3), str(m)[:MAX_SHOWN_MESSAGE]]
            for i, (f, m) in reports.items()
        }
        if shown == self.progress:
            return False
        self.progress = shown
        return True

    def resend(self) -> None:
        """Send the current table again, changed or not.

        Jupyter's server drops iopub messages above its rate limit without a
        word; re-sending when a run ends makes sure the browser shows the end.
        """
        self.send_state(["n", "states_z", "selected", "progress"])
        self.updates_sent += 1

    def counts(self) -> dict[str, int]:
        """Calls per state name, for text summaries."""
        return {name: self._states.count(code) for code, name in enumerate(STATE_NAMES)}

    def describe(self, index: int) -> str:
        """The hover text of call ``index``; never raises."""
        if not 0 <= index < self.n:
            return f"no call {index}"
        if self._describe is None:
            return _default_describe(self._states, index)
        try:
            return str(self._describe(index))
        except Exception as e:  # a bad describe must not break the widget
            log.warning("describe(%d) failed, showing the state only: %r", index, e)
            return f"{_default_describe(self._states, index)}\n(describe failed: {e!r})"

    def on_select(self, callback: Callable[[int], Any], remove: bool = False) -> None:
        """Call ``callback(index)`` when the user clicks a call (``remove=True`` unregisters)."""
        if remove:
            handler = self._select_callbacks.pop(callback, None)
            if handler is not None:
                self.unobserve(handler, names="selected")
            return

        def handler(change: Any) -> None:
            callback(change["new"])

        self._select_callbacks[callback] = handler
        self.observe(handler, names="selected")

    def answer_control(self, op: str, content: dict[str, Any]) -> dict[str, Any]:
        """A hover or a click that came on the control channel (``widgets._control``).

        A click (on a grid made with ``via_control=True``) calls the ``on_select``
        callbacks and leaves ``selected`` to be set by whoever follows them (the
        job view's pusher); else the reply is an error and the front-end sends the
        click as a widget message instead.
        """
        index = _control.index_of(content, self.n)
        if index is None:
            return {"error": f"no call {content.get('index')!r} in a grid of {self.n}"}
        if op == "describe":
            return {"index": index, "text": self.describe(index)}
        if op == "select" and self.via_control and self._select_callbacks:
            for callback in list(self._select_callbacks):
                callback(index)
            return {"index": index, "selected": True}
        return {"error": f"this grid does not answer {op!r} on the control channel"}

    def _on_frontend_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "describe":
            try:
                index = int(content.get("index", -1))
            except (TypeError, ValueError):
                return
            self.send(
                {
                    "type": "description",
                    "index": index,
                    "req": content.get("req"),
                    "view": content.get("view"),
                    "text": self.describe(index),
                }
            )
        elif kind == "hello":
            self.frontend_version = str(content.get("version"))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.counts().items() if v)
        return f"CallGrid(n={self.n}{', ' if shown else ''}{shown})"
