"""Pickling on the client: the function once per job, inputs once per chunk.

Every failure becomes a SerializationError that names the culprit (which
global or closure variable of the function, which input) and what to do.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from .errors import SerializationError

MB = 1024 * 1024


def dumps_function(fn: Callable) -> tuple[bytes, str]:
    """(pickled function, its sha256) or a SerializationError naming the culprit."""
    try:
        data = cloudpickle.dumps(fn, protocol=5)
    except Exception as e:
        raise SerializationError(_function_culprit(fn, e)) from None
    return data, hashlib.sha256(data).hexdigest()


def _function_culprit(fn: Callable, error: Exception) -> str:
    name = getattr(fn, "__qualname__", repr(fn))
    code = getattr(fn, "__code__", None)
    suspects: dict[str, Any] = {}
    if code is not None:
        g = getattr(fn, "__globals__", {})
        for n in code.co_names:
            if n in g:
                suspects[n] = g[n]
        for n, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
            try:
                suspects[n] = cell.cell_contents
            except ValueError:
                pass
    for n, value in suspects.items():
        try:
            cloudpickle.dumps(value, protocol=5)
        except Exception as e:
            return (
                f"function {name!r} cannot be sent to workers: it uses {n!r} "
                f"({type(value).__name__}), which cannot be pickled ({e}). Create it inside "
                f"the function instead, or pass what is needed to rebuild it as an input."
            )
    return f"function {name!r} cannot be pickled to send it to workers: {error}"


def dumps_items(items: Sequence[Any], first: int) -> bytes:
    try:
        return cloudpickle.dumps(list(items), protocol=5)
    except Exception:
        pass
    for k, item in enumerate(items):
        try:
            cloudpickle.dumps(item, protocol=5)
        except Exception as e:
            raise SerializationError(
                f"input #{first + k} ({type(item).__name__}) cannot be pickled to send it to "
                f"workers: {e}. Pass something picklable instead (a path, the data it holds)."
            ) from None
    raise SerializationError("the inputs cannot be pickled together (a recursive structure?)")


@dataclass
class PreparedChunk:
    number: int
    calls: list[int]
    args: bytes


def make_chunks(
    items: Sequence[Any], chunksize: int, max_bytes: int, func_size: int
) -> list[PreparedChunk]:
    """Split ``items`` into pickled chunks of ``chunksize`` calls and at most ``max_bytes``."""
    chunks: list[PreparedChunk] = []
    limit = max_bytes - func_size - 64 * 1024
    if limit <= 0:
        raise SerializationError(
            f"the pickled function alone is {func_size / MB:.1f} MB, over the "
            f"{max_bytes / MB:.0f} MB message limit: it probably captures a big object "
            "(an array, a DataFrame); load that inside the function from a shared file."
        )
    stack = [(a, min(a + chunksize, len(items))) for a in range(0, len(items), chunksize)]
    stack.reverse()
    while stack:
        a, b = stack.pop()
        blob = dumps_items(items[a:b], a)
        if len(blob) > limit:
            if b - a == 1:
                raise SerializationError(
                    f"input #{a} is {len(blob) / MB:.1f} MB once pickled, over the "
                    f"{max_bytes / MB:.0f} MB message limit (max_message_mb, at most the broker's "
                    "max_message_size). Put large data "
                    "on storage the workers can read and pass its path instead."
                )
            mid = (a + b) // 2
            stack.append((mid, b))
            stack.append((a, mid))
            continue
        chunks.append(PreparedChunk(len(chunks), list(range(a, b)), blob))
    return chunks


def loads(data: bytes) -> Any:
    return pickle.loads(data)
