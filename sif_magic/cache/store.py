"""The result cache on disk: what ``resume`` reuses (``cache_dir``, size-limited).

Layout: ``<cache_dir>/<function key>/<segment>.seg``, the folder mode 700 and
its files 600; what a ``.seg`` file holds: ``segfile``. Files are written whole (a temporary name,
then renamed), so a kernel killed while writing leaves no half file; files
are touched when used, and the least recently used go first once the cache
is over its size.

Threads: ``add`` runs on the thread that folds the job's results (after the
fold, outside the Job's lock); ``lookup``, ``info`` and ``clear`` on the
kernel thread. Each writes only its own new files; ``_size`` is an estimate
guarded by a lock. Several kernels may share the folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass

from ..errors import ConfigError
from ..protocol import DONE, ResultSegment
from . import segfile
from .keys import KEY_BYTES

log = logging.getLogger("sif_magic.cache")


@dataclass
class CacheInfo:
    path: str
    functions: int
    files: int
    calls: int  # results kept
    size: int
    limit: int


class CacheStore:
    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.max_bytes = max(0, int(max_bytes))
        self._lock = threading.Lock()
        self._size = -1  # bytes in the cache, as last scanned plus what we added since
        self._seq = 0

    # -- the folder ------------------------------------------------------------
    def _ensure(self, sub: str = "") -> str:
        """The cache folder (or its ``sub`` folder), made 700; refuses one another user owns."""
        try:
            # the folder holding it too (~/.sif_magic): makedirs gives only the last one 700
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            st = os.stat(self.path)
        except OSError as e:
            raise ConfigError(
                f"cache_dir {self.path} cannot be used ({e.strerror or e}): set cache_dir to a "
                "folder you can write (%sif_config cache_dir=~/.sif_magic/cache)"
            ) from None
        if st.st_uid != os.getuid():
            raise ConfigError(
                f"cache_dir {self.path} belongs to another user: set cache_dir to a folder "
                "of yours (%sif_config cache_dir=~/.sif_magic/cache)"
            )
        if st.st_mode & 0o077:
            os.chmod(self.path, 0o700)  # results are private: nobody else reads them
        if not sub:
            return self.path
        folder = os.path.join(self.path, sub)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        return folder

    def _files(self) -> list[os.DirEntry]:
        out: list[os.DirEntry] = []
        if not os.path.isdir(self.path):
            return out
        for sub in os.scandir(self.path):
            if sub.is_dir(follow_symlinks=False) and len(sub.name) == 32:
                out += [f for f in os.scandir(sub.path) if f.name.endswith((".seg", ".tmp"))]
        return out

    # -- writing (the folding thread) -------------------------------------------
    def add(self, fn_key: str, keys: list[bytes], seg: ResultSegment) -> None:
        """Keep the calls of ``seg`` that succeeded (``keys``: the job's input keys)."""
        idx, status, n = seg.indices, seg.status, len(keys)
        done = [k for k, i in enumerate(idx) if status[k] == DONE and 0 <= i < n]
        if not done:
            return
        header = segfile.header(keys, seg, done)
        folder = self._ensure(fn_key)
        with self._lock:
            self._seq += 1
            name = f"{time.time_ns():016x}-{os.getpid()}-{self._seq}"
        tmp = os.path.join(folder, name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(header)
                f.write(seg.values)
                for b in seg.buffers:
                    f.write(b)
            os.replace(tmp, os.path.join(folder, name + ".seg"))
        except OSError as e:
            log.warning("could not keep results in the cache %s: %s; they are not kept", folder, e)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        self._grew(len(header) + len(seg.values) + sum(memoryview(b).nbytes for b in seg.buffers))

    def _grew(self, added: int) -> None:
        with self._lock:
            if self._size < 0:
                self._size = sum(_size_of(f) for f in self._files())
            else:
                self._size += added
            over = self._size > self.max_bytes
        if over:
            self.evict()

    def evict(self) -> None:
        """Drop the least recently used files until the cache is under 90% of its size."""
        files = sorted((_mtime(f), _size_of(f), f.path) for f in self._files())
        total = sum(s for _, s, _ in files)
        goal = self.max_bytes * 0.9
        now = time.time()
        for mtime, size, path in files:
            if total <= goal:
                break
            if path.endswith(".tmp") and now - mtime < 3600:
                continue  # being written
            try:
                os.unlink(path)
                total -= size
            except OSError:
                pass
        with self._lock:
            self._size = total

    # -- reading (the kernel thread) ---------------------------------------------
    def lookup(self, fn_key: str, keys: list[bytes]) -> tuple[list[ResultSegment], set[int]]:
        """Segments that give the calls whose results are kept, and those calls."""
        want: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            want.setdefault(k, []).append(i)
        folder = os.path.join(self._ensure(), fn_key)
        if not want or not os.path.isdir(folder):
            return [], set()
        segments: list[ResultSegment] = []
        hit: set[int] = set()
        names = sorted(
            (f.name for f in os.scandir(folder) if f.name.endswith(".seg")), reverse=True
        )
        for name in names:  # the newest first
            path = os.path.join(folder, name)
            try:
                header, values, buffers = segfile.read(path)
                column, status = header["keys"], header["status"]
                found = {}
                for k in range(len(status)):
                    if status[k] == DONE:
                        calls = want.pop(column[k * KEY_BYTES : (k + 1) * KEY_BYTES], None)
                        if calls:
                            found[k] = calls
            except Exception as e:  # noqa: BLE001 - a damaged file is one to skip
                log.warning("skipping the damaged cache file %s: %s", path, e)
                continue
            if not found:
                continue
            os.utime(path)  # used: it is evicted last
            segments += segfile.segments(header, values, found, buffers)
            for calls in found.values():
                hit.update(calls)
            if not want:
                break
        return segments, hit

    def info(self) -> CacheInfo:
        files = [f for f in self._files() if f.name.endswith(".seg")]
        functions = len({os.path.dirname(f.path) for f in files})
        calls = 0
        for f in files:
            try:
                calls += segfile.read(f.path, header_only=True)[0]["status"].count(DONE)
            except Exception:  # noqa: BLE001 - damaged or just evicted: not counted
                pass
        size = sum(map(_size_of, files))
        return CacheInfo(self.path, functions, len(files), calls, size, self.max_bytes)

    def clear(self) -> int:
        """Remove every kept result; how many files went."""
        files = self._files()
        for sub in {os.path.dirname(f.path) for f in files}:
            shutil.rmtree(sub, ignore_errors=True)
        with self._lock:
            self._size = 0
        return sum(f.name.endswith(".seg") for f in files)


def _size_of(f: os.DirEntry) -> int:
    try:
        return f.stat().st_size
    except OSError:
        return 0


def _mtime(f: os.DirEntry) -> float:
    try:
        return f.stat().st_mtime
    except OSError:
        return 0.0
