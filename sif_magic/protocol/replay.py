"""Replay checks on signed messages: how old a message may be, and which ids were seen.

A signature proves who made a message, not that it is new: a copy taken from the
broker verifies as well as the original. ``verify`` hands back each message's id
and time (``Signed``); the receiver judges them here:

- ``fresh``: a control message (cancel, ping, shutdown) older than
  ``CONTROL_MAX_AGE`` (or dated in the future) beyond ``CLOCK_SKEW`` is stale.
  Tasks have no age limit (they may wait in a queue for days): the worker runs no
  task of a job that has ended instead (``names.job_exchange``).
- ``SeenIds``: the ids of messages accepted lately, as jupyter_client's Session
  keeps its digest history, bounded (oldest forgotten first). A task may come
  again legitimately: redelivered by the broker (after a worker died or a
  connection dropped: ``redelivered`` set, same id), or dead-lettered back from a
  queue after a lease expired (a new ``x-death`` count): ``seen_key`` tells those
  apart from a copy published again.
- ``CLOCK_SKEW``: clocks of two nodes differ by at most this much (NTP keeps them
  within milliseconds); a client trusts a heartbeat only until its own time ``t``
  plus this, so a replayed old heartbeat never keeps a dead worker up.

Threads: ``SeenIds`` is guarded by its lock (any thread); the rest holds no state.
Standard library only.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from .framing import ProtocolError
from .signing import Signed

CLOCK_SKEW = 10.0  # seconds two nodes' clocks may differ (NTP: milliseconds)
CONTROL_MAX_AGE = 60.0  # seconds a control message may take to arrive
CLOCK_FIX = "run NTP (chrony, ntpd or systemd-timesyncd) on both machines"


class StaleMessage(ProtocolError):
    """A message signed too long ago (or dated in the future) to be taken."""


class ReplayedMessage(ProtocolError):
    """A message whose id was accepted here before: a copy published again."""


def fresh(signed: Signed, max_age: float, now: float | None = None) -> None:
    """Raise StaleMessage unless ``signed`` was signed within ``max_age`` s (plus the
    clock skew allowed either way)."""
    age = (time.time() if now is None else now) - signed.t
    if age > max_age + CLOCK_SKEW or age < -CLOCK_SKEW:
        when = f"{age:.0f} s ago" if age > 0 else f"{-age:.0f} s in the future"
        raise StaleMessage(
            f"{signed.kind!r} message {signed.msg_id} was signed {when} (allowed: up to "
            f"{max_age + CLOCK_SKEW:g} s ago): a replayed copy, or the clocks of the sender "
            f"and this machine differ by more than {CLOCK_SKEW:g} s ({CLOCK_FIX})"
        )


def deaths(headers: dict[str, Any] | None) -> int:
    """How many times the broker dead-lettered this message (its ``x-death`` counts)."""
    total = 0
    for entry in (headers or {}).get("x-death") or ():
        if isinstance(entry, dict):
            count = entry.get("count", 1)
            total += count if isinstance(count, int) else 1
    return total


def seen_key(signed: Signed, headers: dict[str, Any] | None = None) -> str:
    """What makes a delivery new: its signed id, nothing else. (An unsigned header,
    such as the broker's ``x-death``, can be forged on a copy; a claim that comes back
    when its lease expired was signed anew, with an id of its own, when the worker
    claimed it or renewed the lease, so it needs no exception.)"""
    return signed.msg_id


class SeenIds:
    """Keys of messages accepted here, at most ``size`` (the oldest go first)."""

    def __init__(self, size: int = 65536) -> None:
        self.size = size
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def first(self, key: str) -> bool:
        """Remember ``key``; whether it is new here."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
            return True

    def check(self, signed: Signed, key: str) -> None:
        """Raise ReplayedMessage if ``key`` (of ``signed``) was accepted before."""
        if not self.first(key):
            raise ReplayedMessage(
                f"{signed.kind!r} message {signed.msg_id} was received here before: a "
                "replayed copy, refused"
            )

    def __len__(self) -> int:
        return len(self._seen)
