"""One thread that owns some state: it runs what other threads post, reads the
pipes it watches when they are readable, and ticks.

This is how the pool has a single writer (``pool.py``): every change to its
state is a handler run here, one at a time, in the order things happened.

Threads: ``post`` from any thread (a deque append, plus a byte to the wake-up
pipe when the dispatcher sleeps); ``watch``/``unwatch`` from the dispatcher
thread, or before ``start``; every handler, the tick and ``done`` run in the
dispatcher thread.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import threading
import time
from collections.abc import Callable

log = logging.getLogger("sif_magic.pool")


class Dispatcher:
    def __init__(
        self, name: str, tick: float, on_tick: Callable[[], None], done: Callable[[], bool]
    ) -> None:
        self.name = name
        self.tick = tick
        self.on_tick = on_tick
        self.done = done  # asked after each round: True ends the thread
        self._inbox: collections.deque[tuple] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sleeping = False  # it waits in its selector: a post must wake it
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def post(self, handler: Callable, *args: object) -> None:
        """Have the dispatcher thread run ``handler(*args)`` (after what was posted before)."""
        self._inbox.append((handler, *args))
        if self._sleeping:
            try:
                os.write(self._wake_w, b"!")
            except OSError:  # full: it wakes anyway; closed: it has stopped
                pass

    def watch(self, fd: int, handler: Callable, *args: object) -> None:
        """Run ``handler(*args)`` whenever ``fd`` is readable (or closed)."""
        self._selector.register(fd, selectors.EVENT_READ, (handler, args))

    def unwatch(self, fd: int) -> None:
        self._selector.unregister(fd)

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end (``done``); whether it did."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def close(self) -> None:
        """Once the thread has ended (or never started); again: nothing."""
        if self._selector.get_map() is None:  # closed already
            return
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def safely(self, handler: Callable, *args: object) -> None:
        try:
            handler(*args)
        except Exception:  # noqa: BLE001 - a bug of ours must not stop the thread
            log.exception("%s failed in %s; going on", self.name, handler.__name__)

    def _run(self) -> None:
        inbox, monotonic, select = self._inbox, time.monotonic, self._selector.select
        next_tick = monotonic() + self.tick
        while not self.done():
            self._sleeping = True  # before looking at the inbox: see post
            ready = select(0 if inbox else max(next_tick - monotonic(), 0))
            self._sleeping = False
            for key, _ in ready:
                if key.data is None:
                    os.read(self._wake_r, 4096)
                else:
                    self.safely(key.data[0], *key.data[1])
            while inbox:
                self.safely(*inbox.popleft())
            if monotonic() >= next_tick:
                self.safely(self.on_tick)
                next_tick = monotonic() + self.tick
