"""A message body handed to pika as its pieces, never joined into one.

A body with big buffers (``protocol.pack_parts``: arrays' raw memory) would cost
a copy of the whole if joined before publishing. pika asks a body for its
length and for slices of one frame each (``frame_max``), which it copies into
frames anyway: ``Parts`` answers from the pieces, so the buffers are read once,
by that copy, as a bare ``bytes`` body is. pika takes only ``bytes`` bodies, so
``Parts`` is one, whose own content is empty: nothing but pika's publish ever
gets it (``wire``, at the publish calls of ``connection`` and ``tx``).

Threads: a Parts is built by the thread that publishes and read by the I/O
thread; nothing changes it.
"""

from __future__ import annotations

from typing import Any


class Parts(bytes):
    """A body for pika's publish: ``len`` and slices, from its pieces."""

    pieces: list[memoryview]
    size: int

    def __new__(cls, pieces: list[Any]) -> Parts:
        self = super().__new__(cls)
        self.pieces = [memoryview(p).cast("B") for p in pieces]
        self.size = sum(len(p) for p in self.pieces)
        return self

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a message body in pieces gives contiguous slices only")
        start, stop, _ = key.indices(self.size)
        out, at = [], 0
        for p in self.pieces:
            end = at + len(p)
            if end > start and at < stop:
                out.append(p[max(start - at, 0) : min(stop, end) - at])
            if end >= stop:
                break
            at = end
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def __bytes__(self) -> bytes:
        return b"".join(self.pieces)

    def __reduce__(self) -> Any:
        return bytes, (bytes(self),)


def wire(body: Any) -> bytes:
    """What pika publishes for ``body``: itself, or its list of pieces as ``Parts`` (a
    list of one ``bytes`` piece, as a small message's is, as that piece: pika slices a
    ``bytes`` body in C, a ``Parts`` in Python, and the piece is the whole body)."""
    if type(body) is not list:
        return body
    if len(body) == 1 and type(body[0]) is bytes:
        return body[0]
    return Parts(body)
