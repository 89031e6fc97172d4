"""Rebuilding the exception of a failed call from its error record.

Pure functions of their arguments; any thread. The frames a worker sends are
mapped back to the cell or file each shipped function came from (``origins``).
"""

from __future__ import annotations

import linecache
import pickle
from typing import Any

from ..errors import CancelledError, Frame, RemoteError, error_class
from ..protocol import CANCELLED, FAILED


def rebuild_error(
    i: int,
    state: int,
    info: dict[str, Any] | None,
    raw: bytes,
    worker: str,
    host: str,
    origins: dict[str, str],
) -> BaseException | None:
    """The exception of call ``i`` in ``state`` (None unless failed or cancelled).

    ``info`` is its error record, ``raw`` its pickled exception (b"" if none)."""
    if state == CANCELLED:
        return CancelledError(f"call {i} was cancelled")
    if state != FAILED:
        return None
    info = info or {"type": "Error", "message": "failed", "frames": []}
    etype = info.get("type", "Error")
    special = error_class(etype)  # one of ours arrives as itself
    if special is not None and special is not RemoteError:
        return special(f"{info.get('message', '')} (host {host or '?'})")
    original = None
    if raw:
        try:
            original = pickle.loads(raw)
        except Exception:  # noqa: BLE001 - the class may not exist here
            original = None
    return RemoteError(
        etype,
        info.get("message", ""),
        locate(info.get("frames") or [], info.get("codes") or [], origins),
        index=i,
        host=host,
        worker=worker,
        exception=original if isinstance(original, BaseException) else None,
    )


def locate(frames: list, codes: list, origins: dict[str, str]) -> list[Frame]:
    """The worker's frames, each shipped one (its code's key is in ``origins``) in
    the file it came from, with its source line from this kernel (cell code lives
    only here); any other frame keeps the worker's file and line (the client fills
    in a line the worker could not read)."""
    out = []
    for k, (filename, lineno, name, line) in enumerate(frames):
        key = codes[k] if k < len(codes) else None
        origin = origins.get(key) if isinstance(key, str) else None
        if origin is not None:
            filename = origin
            line = linecache.getline(origin, lineno).strip() or line
        elif not line:
            line = linecache.getline(filename, lineno).strip()
        out.append(Frame(filename, lineno, name, line))
    return out
