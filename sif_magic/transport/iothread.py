"""The I/O thread: one pika connection, owned by one thread that runs every operation on it.

pika's connections are not thread-safe, so one thread owns the connection and
everything hanging on it (channels, consumers, transactions); other threads reach
it only through operations they hand to ``call()``. The one rule for running an
operation:

    Where the caller runs decides. On the I/O thread itself (a consumer callback,
    or another operation) the operation runs at once, inline. On any other thread
    it is queued behind the operations queued before it, the I/O thread is woken
    (``add_callback_threadsafe``), and runs it before it next waits for the
    network. ``wait`` only decides what the caller gets back: the result, once it
    is there, or a Future; ``post()`` is the same without either (for acks: no
    Future to make, its errors are logged).

A queued operation that meets a lost connection stays queued and runs again after
the reconnect; an inline one raises to its caller on the I/O thread, and the
connection's loop reconnects. One the broker *refuses* (it closes the channel with
a reply code: a missing exchange, no permission, a message over its size limit)
is tried again after the reconnect too, but dropped after ``refusals.MAX_REFUSALS``
refusals: its caller gets a ``BrokerError`` with the broker's reason (a posted
one is logged), instead of the connection going down and up for ever. After each round of queued operations the subclass's
``_end_round()`` runs (``Connection`` commits its staged transactions there), and
after pika has handed out what arrived, its ``_events_done()``.

When the connection drops, the thread drops it (``_lost()``), waits with backoff
and connects again, forever until ``close()``; the backoff doubles up to
``MAX_BACKOFF`` and starts small again only after a connection that stayed up
``STABLE`` seconds (one the broker keeps closing backs off like one it refuses); the subclass sets up the new
connection in ``_open()``. pika's exceptions while connecting stop here: callers
see BrokerError. Given several brokers (the nodes of a cluster), it connects to the
first that answers, and after losing one it tries the next node first (the lost
one comes last: it is likely the one that died).

Threads and ownership: ``call()``, ``post()`` and ``close()`` from any thread. The
I/O thread alone touches the pika connection (``_conn``) and pops ``_ops``; any
thread appends to ``_ops`` (a deque: appends are atomic). ``generation`` (how many connections
there have been), ``connected``, ``closed`` and ``node`` (which of the brokers the
connection is on) are written by the I/O thread (and ``close()``), read by anyone.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import pika
import pika.exceptions as pe

from .._urls import split_urls
from ..errors import BrokerError, mask_url
from .connect import dial, explain_connect_error
from .refusals import Refusals, reason

log = logging.getLogger("sif_magic.broker")
for _noisy in ("pika", "pika.adapters", "pika.connection", "pika.channel"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL)
_Self = TypeVar("_Self", bound="IOThread")
MAX_BACKOFF = 30.0  # seconds between reconnects at most
STABLE = 30.0  # seconds a connection must stay up for the backoff to start small again

# what pika raises when the connection (or the channel an operation used) is gone
LOST_ERRORS = (
    pe.AMQPConnectionError,
    pe.ConnectionClosed,
    pe.StreamLostError,
    pe.ChannelWrongStateError,
    pe.ConnectionWrongStateError,
    pe.ChannelClosed,
    OSError,
)


class IOThread:
    """A pika connection run by its own thread, reconnecting as needed.

    Subclasses set up a new connection in ``_open()``, forget what died with one in
    ``_lost()`` and finish a round of operations in ``_end_round()``."""

    def __init__(
        self,
        url: str,
        params: pika.URLParameters | list[pika.URLParameters],
        name: str,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.url = url  # one broker URL, or several (the nodes of a cluster)
        self.params = params if isinstance(params, list) else [params]
        self.urls = split_urls(url)
        if len(self.urls) != len(self.params):
            raise ValueError("one set of connection parameters per broker URL")
        self.node = 0  # the broker (index in ``urls``) the connection is, or was last, on
        self._first = 0  # the broker to try first on the next connect
        self.name = name
        self.on_state = on_state  # called on the I/O thread: False when lost, True when back
        self.generation = 0
        self.connected = False
        self.closed = False
        self._conn: pika.BlockingConnection | None = None
        # (operation, its Future or None if posted)
        self._ops: collections.deque[tuple[Callable[[], Any], Future | None]] = collections.deque()
        self._thread: threading.Thread | None = None
        self._woken = False  # a wake-up is on its way to the I/O thread
        self._up_since = 0.0  # when the current connection opened (monotonic)
        self.refusals = Refusals()

    # -- for the subclass (all on the I/O thread, or in start() before it runs) ----------
    def _open(self, conn: pika.BlockingConnection, generation: int) -> None:
        """Set up what lives on the new connection ``conn``, number ``generation``;
        raising refuses it (it is closed, and connecting starts over)."""

    def _lost(self) -> None:
        """The connection is gone: forget what died with it."""

    def _end_round(self) -> None:
        """A round of queued operations is over."""

    def _events_done(self) -> None:
        """pika has handed every delivery that arrived to the consumers' callbacks."""

    # -- life ----------------------------------------------------------------------------
    def start(self: _Self) -> _Self:
        """Connect now (raising BrokerError with the reason if that fails), then run."""
        try:
            self._connect()
        except BrokerError:
            raise
        except BaseException as e:
            raise explain_connect_error(self.url, e) from None
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-io", daemon=True)
        self._thread.start()
        return self

    @property
    def node_url(self) -> str:
        """The URL of the broker the connection is (or was last) on."""
        return self.urls[self.node]

    def _connect(self) -> None:
        conn, self.node = dial(self.params, self.urls, self._first)
        try:
            self._open(conn, self.generation + 1)
        except BaseException:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
            raise
        self._conn = conn
        self.generation += 1
        self.connected = True
        self._up_since = time.monotonic()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        conn = self._conn
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    # -- the one way in ------------------------------------------------------------------
    def call(self, fn: Callable[[], Any], wait: bool = True, timeout: float | None = None) -> Any:
        """Run ``fn`` on the I/O thread by the one rule (module docstring): inline if
        called there, else queued in order. Returns its result (``wait``) or a Future."""
        if threading.current_thread() is self._thread:
            if wait:
                return fn()
            done: Future = Future()
            try:
                done.set_result(fn())
            except LOST_ERRORS:
                raise  # the connection's loop reconnects
            except BaseException as e:  # noqa: BLE001
                done.set_exception(e)
            return done
        fut: Future = Future()
        if self.closed or (self._thread is not None and not self._thread.is_alive()):
            fut.set_exception(BrokerError("the broker connection is closed"))
            return fut.result() if wait else fut
        self._ops.append((fn, fut))
        self._wake()
        return fut.result(timeout) if wait else fut

    def post(self, fn: Callable[[], Any]) -> None:
        """``call(fn, wait=False)`` for an operation whose outcome nobody waits for: the
        same rule, no Future; an error (other than a lost connection) is logged."""
        if threading.current_thread() is self._thread:
            try:
                fn()
            except LOST_ERRORS:
                raise  # the connection's loop reconnects
            except Exception:  # noqa: BLE001
                log.exception("an operation on the broker connection failed")
            return
        if not self.closed:
            self._ops.append((fn, None))
            self._wake()

    def later(self, fn: Callable[[], Any]) -> None:
        """Queue ``fn`` for the next round of operations, even from the I/O thread (a
        pika callback that must not open channels while pika dispatches it). Like
        ``post``: no Future, errors are logged; one that meets a lost connection runs
        again after the reconnect, so it must check that what it acts on still lives."""
        if not self.closed:
            self._ops.append((fn, None))
            self._wake()

    def _wake(self) -> None:
        conn = self._conn
        if conn is None or self._woken or threading.current_thread() is self._thread:
            return  # the I/O thread runs the queued ops before it waits again
        self._woken = True
        try:
            conn.add_callback_threadsafe(lambda: None)
        except Exception:  # noqa: BLE001 - closed meanwhile: the loop notices
            pass

    # -- the I/O thread ------------------------------------------------------------------
    def _loop(self) -> None:
        backoff = 0.5
        while not self.closed:
            try:
                if self._conn is None:
                    self._connect()
                    log.warning("reconnected to %s", mask_url(self.node_url))
                    self._notify(True)
                self._woken = False
                self._run_ops()
                if self._conn.is_closed:  # type: ignore[union-attr]
                    # closed under a round of ops that committed nothing (pika would
                    # raise ValueError, not a connection error, on the next call)
                    raise pe.StreamLostError("the connection was closed")
                self._conn.process_data_events(time_limit=0.2)  # type: ignore[union-attr]
                self._events_done()
            except LOST_ERRORS as e:
                if self.closed:
                    break
                if self.connected:
                    if time.monotonic() - self._up_since >= STABLE:
                        backoff = 0.5
                    log.warning(
                        "lost the broker connection to %s (%s); reconnecting in %.1f s, until %s",
                        mask_url(self.node_url),
                        reason(e),
                        backoff,
                        "a broker answers" if len(self.urls) > 1 else "it is back",
                    )
                    self._notify(False)
                self._drop()
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except BrokerError as e:  # the broker refused our setup (e.g. a queue's type)
                if self.closed:
                    break
                log.error("%s; trying again in %.0f s", e, backoff)
                self._drop()
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        self._drop()
        while self._ops:
            _, fut = self._ops.popleft()
            if fut is not None and not fut.done():
                fut.set_exception(BrokerError("the broker connection was closed"))

    def _dropped(self, fut: Future | None, e: Exception) -> None:
        """A refused operation was dropped: its caller (or the log) hears why."""
        error = BrokerError(f"the broker refused an operation repeatedly ({reason(e)}): dropped")
        log.error("%s", error)
        if fut is not None and not fut.done():
            fut.set_exception(error)

    def _notify(self, up: bool) -> None:
        if self.on_state is not None:
            try:
                self.on_state(up)
            except Exception:  # noqa: BLE001
                pass

    def _drop(self) -> None:
        if self.connected:  # after losing a broker, try the next one first
            self._first = (self.node + 1) % len(self.params)
        self.connected = False
        self._lost()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if conn.is_open:
                    conn.close()
            except Exception:  # noqa: BLE001
                pass

    def _run_ops(self) -> None:
        while self._ops:
            fn, fut = self._ops[0]
            if fut is not None and fut.done():  # cancelled by the caller
                self._ops.popleft()
                continue
            try:
                result = fn()
            except pe.ChannelClosedByBroker as e:
                if not self.refusals.op_refused(fn, e):
                    self._ops.popleft()  # dropped; the channel is gone all the same
                    self._dropped(fut, e)
                raise  # the connection's loop reconnects (and runs what stays queued)
            except LOST_ERRORS:
                raise  # stays queued: retried after the reconnect
            except BaseException as e:  # noqa: BLE001
                self._ops.popleft()
                if fut is None:
                    log.error("an operation on the broker connection failed", exc_info=e)
                else:
                    fut.set_exception(e)
                continue
            self._ops.popleft()
            if fut is not None:
                fut.set_result(result)
        self._end_round()
