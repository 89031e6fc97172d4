"""The display's pusher: the one thread that writes the widgets of shown jobs.

It wakes ``RATE`` times a second (sooner when woken: a job ended, the user
clicked) and redraws each view whose job changed, with the changes batched in
``hold_sync``; a view whose job ended (or that was asked to finish) draws its
end, sends it all again and goes idle: from then on it is drawn only when the
user asks for something (a click in the grid after the run). Jupyter's server
drops widget messages above its rate limit without a word, hence the bounded
rate and the final resend.

Threads: ``add`` and ``wake`` from any thread (a lock and an Event); everything
else runs on the ``sif-display`` thread. Owner of every view it holds.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

RATE = 10.0  # redraws per second per view, at most (when not woken sooner)


class Pusher:
    def __init__(self) -> None:
        self.views: set[Any] = set()
        # finished views, kept while their widgets are (the widgets' callbacks hold them)
        self.idle: weakref.WeakSet[Any] = weakref.WeakSet()
        self.lock = threading.Lock()
        self._woken = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sif-display", daemon=True)
        self.thread.start()

    def add(self, view: Any) -> None:
        with self.lock:
            self.views.add(view)
        self.wake()

    def wake(self) -> None:
        self._woken.set()

    def _run(self) -> None:
        while True:
            self._woken.wait(1.0 / RATE)
            self._woken.clear()
            self.push()

    def push(self) -> None:
        """One round: redraw what changed, finish what ended (on the pusher thread)."""
        with self.lock:
            views = list(self.views)
            asking = [v for v in self.idle if v.wants_draw()]
        for view in views:
            try:
                if view.job.done() or view.finish_asked:
                    view.finish()
                    self._drop(view, idle=True)
                elif view.wants_draw() or time.time() >= view.quiet_until:
                    view.refresh()
            except Exception:  # noqa: BLE001 - a broken front-end must not stop the others
                self._drop(view)
                view.finished.set()  # nobody waits for a view that cannot draw
        for view in asking:
            try:
                view.refresh()
            except Exception:  # noqa: BLE001
                self._drop(view)

    def _drop(self, view: Any, idle: bool = False) -> None:
        with self.lock:
            self.views.discard(view)
            self.idle.discard(view)
            if idle:
                self.idle.add(view)


_PUSHER: Pusher | None = None
_PUSHER_LOCK = threading.Lock()


def pusher() -> Pusher:
    """The process's pusher (started on first use)."""
    global _PUSHER
    with _PUSHER_LOCK:
        if _PUSHER is None:
            _PUSHER = Pusher()
        return _PUSHER
