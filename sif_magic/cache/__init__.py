"""Resume: reuse the results of calls that succeeded before (``map_job(resume=True)``,
``%%sifmap ... --resume``).

A call's result is kept under the key of its function (``keys.function_key``)
and of its input (``keys.input_keys``) in the cache folder (``store``); a job
run with resume first looks its calls up there, folds what it finds into the
job (shown as done at once, from the worker "cache"), sends only the other
calls, and keeps their results as the job folds them, so a kernel that dies
mid-run loses none of the calls that finished.

Threads: ``prepare`` runs on the kernel thread; ``Resume.record`` on the thread
that folds the job's results (see ``store``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..protocol import ResultSegment
from ..runner import spill
from .keys import function_key, input_keys
from .store import CacheInfo, CacheStore

log = logging.getLogger("sif_magic.cache")

__all__ = ["CacheInfo", "CacheStore", "Resume", "function_key", "input_keys", "prepare", "store"]

MB = 1024 * 1024
_stores: dict[str, CacheStore] = {}  # one per folder in this process (a shared size estimate)
_stores_lock = threading.Lock()


def store(path: str, max_mb: float) -> CacheStore:
    """The cache in folder ``path`` (``cache_dir``), limited to ``max_mb``."""
    with _stores_lock:
        s = _stores.get(path)
        if s is None:
            s = _stores[path] = CacheStore(path, int(max_mb * MB))
        s.max_bytes = int(max_mb * MB)
        return s


class Resume:
    """Keeps the results of one job in the cache as the job folds them."""

    def __init__(self, cache: CacheStore, fn_key: str, keys: list[bytes], reused: int) -> None:
        self.cache = cache
        self.fn_key = fn_key
        self.keys = keys
        self.reused = reused  # calls found in the cache

    def record(self, segments: list[ResultSegment]) -> None:
        for seg in segments:
            if seg.worker == "cache":  # what came from the cache is there already
                continue
            if spill.is_reference(seg.values):  # kept: the values, not the file (it goes)
                try:
                    values, buffers = spill.load_parts(seg.values, seg.buffers)
                    seg = ResultSegment(
                        seg.indices, seg.status, seg.attempts, seg.times, bytes(values),
                        seg.extra, seg.worker, seg.host, seg.pid, seg.devices, list(buffers),
                    )  # fmt: skip
                except spill.SpillError as e:
                    log.warning("a result of this job is not kept in the cache: %s", e)
                    continue
            self.cache.add(self.fn_key, self.keys, seg)


def prepare(
    cache: CacheStore, fn: Callable, items: Sequence[Any], star: bool, env: dict[str, str]
) -> tuple[Resume, list[ResultSegment], list[int]]:
    """(the recorder, segments of the calls found, the calls still to run)."""
    fn_key = function_key(fn, star, env)
    keys = input_keys(items)
    segments, hit = cache.lookup(fn_key, keys)
    missing = [i for i in range(len(items)) if i not in hit]
    return Resume(cache, fn_key, keys, len(hit)), segments, missing
