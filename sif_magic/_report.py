"""``sif_magic.report(fraction, message)``: a call tells how far it is.

Inside a call on a worker (or the local backend) it writes the fraction and
message into the slot's state file (``runner/slotio.py``): no message, no
system call, so reporting every microsecond costs the same as every second.
The pool reads it at its tick and sends the newest value with the other
monitoring events (``runner/events.py``); the job shows it in the grid (a
partial fill), the tooltip, the log viewer's title and the progress bar.
Outside a worker it checks its arguments and does nothing.

Threads: any thread of the call's process (the slot guards its record with a
lock). Standard library only: it runs in the worker image.
"""

from __future__ import annotations

import math
import sys

SLOT_PACKAGE = "_sif_magic_slot"  # the slot process's private package (runner/slot.py)


def report(fraction: float, message: str = "") -> None:
    """Show that the running call is ``fraction`` (0 to 1) done, with ``message``.

    A no-op outside a sif_magic worker, so the same function runs locally too."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise TypeError(
            f"sif_magic.report needs a fraction between 0 and 1, got {fraction!r}"
        ) from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(
            f"sif_magic.report needs a fraction between 0 and 1, got {fraction!r} "
            "(for step k of n, pass k / n)"
        )
    hook = getattr(sys.modules.get(SLOT_PACKAGE), "report", None)
    if hook is not None:
        hook(value, message if isinstance(message, str) else str(message))
