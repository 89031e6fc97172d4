"""Widget clicks that come on the kernel's control channel, not as widget messages.

A front-end's widget messages travel on the shell channel, which a running cell
holds until it ends: under a blocking ``%%sifmap`` a click in the grid, another
log mode or a hover would wait for the run to end. So the front-end
(``labextension/src/control.ts``) first asks on the control channel
(``display.panel`` answers ``sif_magic_request`` there), naming the widget by
its model id; only where that is not answered does it send the widget message.

Requests (``content`` of a ``sif_magic_request``, besides ``widget``):
``{"op": "select", "index": i}`` (a click in a CallGrid), ``{"op": "describe",
"index": i}`` (a hover: the reply has ``text``) and ``{"op": "mode", "mode": m}``
(a LogView's dropdown). Only widgets made with ``via_control=True`` are asked
so (the job views make them so where the kernel answers: ``panel.installed``),
because such a click does not set the synced trait (``selected``, ``mode``):
it calls the widget's ``on_select`` / ``on_mode_change`` callbacks, and their
owner sets the trait. Other widgets keep the widget messages.

Threads: ``listen`` where a widget is made; ``answer`` on the kernel's control
thread. A widget's ``answer_control`` does not write its traits there: it calls
its callbacks, which set plain fields and wake the widget's one writer (the
display's pusher, ``display.view``). Owner of ``_LIVE`` (a weak map).
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

OPS = ("select", "describe", "mode")

_LIVE: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


class Answers(Protocol):
    model_id: str

    def answer_control(self, op: str, content: dict[str, Any]) -> dict[str, Any]: ...


def listen(widget: Answers) -> None:
    """Let ``widget`` answer requests that name its model id (kept while it lives)."""
    model_id = getattr(widget, "model_id", None)
    if model_id:
        _LIVE[str(model_id)] = widget


def answer(content: dict[str, Any]) -> dict[str, Any]:
    """The reply to one widget request (see the module docstring)."""
    widget = _LIVE.get(str(content.get("widget")))
    if widget is None:
        return {"error": f"no widget {content.get('widget')!r} answers in this kernel"}
    return widget.answer_control(str(content.get("op")), content)


def index_of(content: dict[str, Any], n: int) -> int | None:
    """The call index a request names, or None when it is not one of ``n`` calls."""
    try:
        index = int(content.get("index", -1))
    except (TypeError, ValueError):
        return None
    return index if 0 <= index < n else None
