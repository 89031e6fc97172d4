"""One file of the result cache: the calls of one result segment, as the job folded it.

A header (per call: its input key, status, times, output and own pickle) and
the segment's values pickle as it came, then its out-of-band buffers (the
arrays' memory; their lengths in the header's ``parts``, absent without):
nothing is unpickled to keep it.
Reading one back gives ``ResultSegment``s the job folds like any other (the
calls it does not need are SKIP). Pure functions; any thread.
"""

from __future__ import annotations

import pickle
from array import array

from ..protocol import DONE, SKIP, CallExtra, ResultSegment
from .keys import KEY_BYTES

MAGIC = b"SIFCACHE1\n"
HEAD = 8  # bytes of the header's length
_NO_KEY = bytes(KEY_BYTES)


def header(keys: list[bytes], seg: ResultSegment, done: list[int]) -> bytes:
    """The start of the file of ``seg`` (``keys``: the job's input keys; ``done``: the
    positions of the calls kept); the segment's values pickle follows it."""
    column = [_NO_KEY] * len(seg.indices)
    extra = {}
    for k in done:
        column[k] = keys[seg.indices[k]]
        e = seg.extra.get(k)
        if e is not None:
            extra[k] = (e[1], e[2], e[3], e[4])
    fields = {"keys": b"".join(column), "status": bytes(seg.status),
              "times": seg.times.tobytes(), "extra": extra}  # fmt: skip
    if seg.buffers:
        fields["parts"] = [len(seg.values), *(memoryview(b).nbytes for b in seg.buffers)]
    head = pickle.dumps(fields, protocol=5)
    return MAGIC + len(head).to_bytes(HEAD, "big") + head


def read(path: str, header_only: bool = False) -> tuple[dict, bytes, list[memoryview]]:
    """(header, values pickle, its buffers) of a cache file (values b"" and no buffers
    with ``header_only``)."""
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + HEAD)
        if not head.startswith(MAGIC):
            raise ValueError("not a sif_magic cache file")
        size = int.from_bytes(head[len(MAGIC) :], "big")
        header = pickle.loads(f.read(size))
        if header_only:
            return header, b"", []
        rest = f.read()
    parts = header.get("parts")
    if not parts:
        return header, rest, []
    if sum(parts) != len(rest):
        raise ValueError("its parts do not add up to its size")
    view, out, at = memoryview(bytearray(rest)), [], 0  # writable: arrays built on it
    for n in parts:
        out.append(view[at : at + n])
        at += n
    return header, out[0], out[1:]


def segments(
    header: dict, values: bytes, found: dict[int, list[int]], buffers: list | tuple = ()
) -> list[ResultSegment]:
    """One segment per round: a kept call wanted by several calls of the job (the same
    input twice) gives each of them its value, in turn."""
    m = len(header["status"])
    times = array("d")
    times.frombytes(header["times"])
    out = []
    for r in range(max(len(calls) for calls in found.values())):
        indices = array("q", [-1]) * m
        status = bytearray([SKIP]) * m
        extra = {}
        for k, calls in found.items():
            if r < len(calls):
                indices[k] = calls[r]
                status[k] = DONE
                if k in header["extra"]:
                    extra[k] = CallExtra(None, *header["extra"][k])
        out.append(
            ResultSegment(
                indices,
                bytes(status),
                b"\x01" * m,
                times,
                values,
                extra,
                "cache",
                "cache",
                buffers=buffers,
            )
        )
    return out
