"""What the broker refuses: operations and staged messages, counted and dropped.

The broker refuses an operation by closing its channel with a reply code: a
missing exchange (404), no permission (403), a message over its size limit (406).
Sent again after every reconnect, such a message brought the connection down and
up for ever (47 reconnects in 12 s for a publish to a missing exchange). Now an
operation or a staged message refused ``MAX_REFUSALS`` times in a row is dropped
and reported (its caller gets the broker's reason; a staged one is logged).

Threads: the transport's I/O thread only (it owns the counters).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

log = logging.getLogger("sif_magic.broker")
MAX_REFUSALS = 3  # times the broker may refuse an operation or message before it is dropped


def reason(e: BaseException) -> str:
    """What the broker said (``404 NOT_FOUND - no exchange ...``), else the error's type."""
    code, text = getattr(e, "reply_code", None), getattr(e, "reply_text", "")
    return f"{code} {text}" if code else type(e).__name__


def size_limit(e: BaseException) -> int | None:
    """The broker's message size limit, if ``e`` refused a message for its size
    (RabbitMQ: ``message size 3145800 is larger than configured max size 2097152``)."""
    found = re.search(r"larger than (?:configured )?max size (\d+)", getattr(e, "reply_text", ""))
    return int(found.group(1)) if found else None


class Refusals:
    """Refusals in a row of the operation at the head of the queue, and of staged
    messages (by identity: a staged message is sent again as the same object)."""

    def __init__(self) -> None:
        self._op: tuple[Callable[[], Any] | None, int] = (None, 0)
        self._messages: dict[int, int] = {}
        self.size_limit = 0  # the broker's message size limit, once a refusal named it

    def _note(self, e: BaseException) -> None:
        limit = size_limit(e)
        if limit:
            self.size_limit = limit

    def op_refused(self, fn: Callable[[], Any], e: BaseException) -> int:
        """``fn`` was refused: how many times in a row (0 once it is to be dropped)."""
        self._note(e)
        op, count = self._op
        count = count + 1 if op is fn else 1
        if count >= MAX_REFUSALS:
            self._op = (None, 0)
            return 0
        self._op = (fn, count)
        return count

    def messages_refused(self, messages: list[Any], e: BaseException) -> list[Any]:
        """A commit holding ``messages`` was refused: those of them refused
        MAX_REFUSALS times (dropped, each reported), the others kept for another try."""
        self._note(e)
        kept = []
        for m in messages:
            count = self._messages.get(id(m), 0) + 1
            if count < MAX_REFUSALS:
                self._messages[id(m)] = count
                kept.append(m)
                continue
            self._messages.pop(id(m), None)
            log.error(
                "the broker refused a %s message to %r %d times (%s): dropped",
                getattr(m[3], "type", "?"),
                m[1],
                count,
                reason(e),
            )
        return kept

    def committed(self, messages: list[Any]) -> None:
        for m in messages:
            self._messages.pop(id(m), None)
