"""Pickles whose big buffers travel beside them (pickle protocol 5, out of band).

A NumPy array (any object whose ``__reduce_ex__(5)`` gives a ``PickleBuffer``) is
pickled as a small stream plus its raw memory, taken as it is: ``dumps`` returns
the stream and the buffers (1-D byte memoryviews of the objects' own memory, no
copy); ``pickle.loads(stream, buffers=...)`` rebuilds the objects on the buffers
given (no copy either: an array reads the memory of the buffer it gets, so a
writable buffer gives a writable array). ``cloud_pickler()`` (cloudpickle's)
also pickles a ``memoryview`` (format, shape and read-only flag kept), its
memory out of band.

On the pipes between a slot and its parent, a message is ``HEAD`` (stream length,
number of buffers), each buffer's length (u64), the stream, then the buffers,
written with one ``os.writev`` and read into buffers allocated for them
(``read_msg``, and ``FrameReader`` for a non-blocking pipe): a buffer is copied
only by the kernel, into the pipe and out of it.

Standard library only (the slot loads it by path; cloudpickle is imported by the
caller that needs it). Threads: any; a FrameReader has one reader.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from collections.abc import Callable
from typing import Any

HEAD = struct.Struct(">II")  # stream length, number of buffers
SIZE = struct.Struct(">Q")
READ_SIZE = 1 << 16  # bytes read from a non-blocking pipe at once
DIRECT = 1 << 18  # a message this much short of whole is read straight into its buffers
IOV_MAX = 512  # iovecs per writev/readv call (Linux allows 1024)


def reduce_memoryview(obj: memoryview) -> Any:
    """A memoryview as a reduce value, its memory as one ``PickleBuffer`` (format,
    shape and read-only flag kept); NotImplemented for a format ``cast`` lacks."""
    readonly, fmt, shape = obj.readonly, obj.format, list(obj.shape)
    try:
        if not obj.c_contiguous:
            obj = memoryview(bytearray(obj.tobytes())).cast(fmt, shape)
        flat = obj if obj.ndim == 1 and fmt == "B" else obj.cast("B")
    except (TypeError, ValueError, NotImplementedError):
        return NotImplemented
    view: Any = (memoryview, (pickle.PickleBuffer(flat),))
    if flat is not obj:
        view = (memoryview.cast, (_Rebuilt(view), fmt, shape))
    if readonly:
        view = (memoryview.toreadonly, (_Rebuilt(view),))
    return view


class _Rebuilt:
    """A reduce value nested in the arguments of another."""

    __slots__ = ("value",)

    def __init__(self, value: tuple) -> None:
        self.value = value

    def __reduce__(self) -> tuple:
        return self.value


_CLOUD: list[type] = []


def cloud_pickler() -> type:
    """cloudpickle's pickler that also pickles memoryviews (made on first use: the
    slot imports cloudpickle only when it needs it)."""
    if not _CLOUD:
        import cloudpickle

        class CloudPickler(cloudpickle.Pickler):
            def reducer_override(self, obj: Any) -> Any:
                if type(obj) is memoryview:
                    return reduce_memoryview(obj)
                return super().reducer_override(obj)

        _CLOUD.append(CloudPickler)
    return _CLOUD[0]


def dumps(obj: Any, buffers: list[memoryview] | None, pickler: type | None = None) -> bytes:
    """``obj`` pickled (protocol 5; by ``pickler``, e.g. ``cloud_pickler()``, if given);
    with ``buffers``, its out-of-band buffers are appended there (raw byte
    memoryviews of the objects' memory: no copy), else they go in band."""
    found: list[pickle.PickleBuffer] = []
    callback = None if buffers is None else found.append
    if pickler is None:
        data = pickle.dumps(obj, protocol=5, buffer_callback=callback)
    else:
        with io.BytesIO() as f:
            pickler(f, protocol=5, buffer_callback=callback).dump(obj)
            data = f.getvalue()
    if buffers is not None:
        buffers.extend(b.raw() for b in found)
    return data


def nbytes(buffers: list[Any] | tuple) -> int:
    return sum(memoryview(b).nbytes for b in buffers)


def loads(data: Any, buffers: list[Any] | tuple = ()) -> Any:
    """Unpickle ``data`` on ``buffers``. The objects built on them must be writable,
    as they were before they travelled: a read-only view of a whole buffer this
    module allocated (a pipe's reader marks the buffers of read-only memory so) is
    taken as that buffer, any other read-only buffer (a message body) is copied."""
    if buffers:
        buffers = [_writable(b) for b in buffers]
    return pickle.loads(data, buffers=buffers)


def _writable(b: Any) -> Any:
    m = memoryview(b)
    if not m.readonly:
        return b
    owner = m.obj
    if type(owner) is bytearray and len(owner) == m.nbytes and m.contiguous:
        return owner
    return bytearray(m)


def alloc(n: int) -> bytearray:
    """A writable buffer of ``n`` bytes to read into. (A bytearray: malloc hands back
    the memory of the last ones, already mapped; a fresh anonymous mapping per
    buffer measured ten times slower, for its page faults.)"""
    return bytearray(n)


# -- pipes ----------------------------------------------------------------------

PIPE_SIZE = 1 << 20  # bytes a pipe holds, if the system allows (Linux: pipe-max-size)


def widen(fd: int) -> None:
    """Let the pipe of ``fd`` hold PIPE_SIZE bytes (where the system allows): a big
    message then passes in a few writes and reads, not one per 64 KB."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # type: ignore[attr-defined]
    except (AttributeError, OSError):  # not Linux, or over the limit: the default stays
        pass


def write_msg(fd: int, msg: object) -> None:
    """Pickle ``msg`` (its ``PickleBuffer``s out of band) and write it whole to ``fd``."""
    found: list[pickle.PickleBuffer] = []
    body = pickle.dumps(msg, protocol=5, buffer_callback=found.append)
    raws = [b.raw() for b in found]
    head = HEAD.pack(len(body), len(raws)) + b"".join(SIZE.pack(r.nbytes) for r in raws)
    if not raws:
        _write_all(fd, [head + body])
    else:
        _write_all(fd, [head, body, *raws])


def _write_all(fd: int, parts: list[Any]) -> None:
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        _advance(views, os.writev(fd, views[:IOV_MAX]))


def read_msg(fd: int) -> object | None:
    """The next message of a blocking ``fd``; None at its end."""
    head = _read_exact(fd, HEAD.size)
    if head is None:
        return None
    blen, nbufs = HEAD.unpack(head)
    sizes: list[int] = []
    if nbufs:
        raw = _read_exact(fd, SIZE.size * nbufs)
        if raw is None:
            return None
        sizes = [s for (s,) in SIZE.iter_unpack(raw)]
    body = bytearray(blen)
    bufs = [alloc(s) for s in sizes]
    if not _readv_all(fd, [memoryview(body), *map(memoryview, bufs)]):
        return None
    return pickle.loads(body, buffers=bufs)


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        try:
            b = os.read(fd, n)
        except InterruptedError:
            continue
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def _readv_all(fd: int, views: list[memoryview]) -> bool:
    views = [v for v in views if len(v)]
    while views:
        try:
            n = os.readv(fd, views[:IOV_MAX])
        except InterruptedError:
            continue
        if not n:
            return False
        _advance(views, n)
    return True


def _advance(views: list[memoryview], n: int) -> None:
    while n:
        if n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        else:
            views[0] = views[0][n:]
            n = 0


class FrameReader:
    """Whole messages from a non-blocking pipe: small ones through a buffer, a big
    one straight into the buffers it is unpickled on."""

    def __init__(self, fd: int, on_garbled: Callable[[], None]) -> None:
        self.fd = fd
        self.on_garbled = on_garbled
        self.buf = bytearray()  # what arrived of the next small message
        # a big message being read: (stream, buffers, views still to fill)
        self.big: tuple[bytearray, list[Any], list[memoryview]] | None = None

    def receive(self) -> list[Any] | None:
        """The whole messages that arrived; None once the pipe closed (or was garbled)."""
        msgs: list[Any] = []
        if self.big is not None:
            state = self._fill()
            if not state:
                return None if state is None else msgs
            if not self._finish(msgs):
                return None
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return msgs
        except OSError:
            data = b""
        if not data:
            return msgs or None
        buf = self.buf
        buf += data
        pos, end = 0, len(buf)
        try:
            with memoryview(buf) as view:
                while end - pos >= HEAD.size:
                    blen, nbufs = HEAD.unpack_from(buf, pos)
                    at = pos + HEAD.size + SIZE.size * nbufs
                    if at > end:
                        break
                    sizes = [SIZE.unpack_from(buf, pos + HEAD.size + SIZE.size * k)[0]
                             for k in range(nbufs)]  # fmt: skip
                    total = at - pos + blen + sum(sizes)
                    if end - pos >= total:
                        bufs, b = [], at + blen
                        for s in sizes:
                            bufs.append(bytearray(view[b : b + s]))
                            b += s
                        msgs.append(pickle.loads(view[at : at + blen], buffers=bufs))
                        pos += total
                        continue
                    if total - (end - pos) >= DIRECT:
                        self._start(view[at:end], blen, sizes)
                        pos = end
                    break
        except Exception:  # noqa: BLE001 - a garbled pipe is a dead process
            self.on_garbled()
            return None
        del buf[:pos]
        if self.big is not None and self._fill() and not self._finish(msgs):
            return None
        return msgs

    def _start(self, have: memoryview, blen: int, sizes: list[int]) -> None:
        body = bytearray(blen)
        bufs = [alloc(s) for s in sizes]
        views = [v for v in map(memoryview, [body, *bufs]) if len(v)]
        k = 0
        while k < len(have):
            v = views[0]
            n = min(len(v), len(have) - k)
            v[:n] = have[k : k + n]
            k += n
            _advance(views, n)
        self.big = (body, bufs, views)

    def _fill(self) -> bool | None:
        """Read into the big message's buffers: True once whole, None at the pipe's end."""
        views = self.big[2]  # type: ignore[index]
        while views:
            try:
                n = os.readv(self.fd, views[:IOV_MAX])
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            except OSError:
                return None
            if not n:
                return None
            _advance(views, n)
        return True

    def _finish(self, msgs: list[Any]) -> bool:
        """Append the big message, whole now, to ``msgs``; False if it is garbled."""
        body, bufs, _ = self.big  # type: ignore[misc]
        self.big = None
        try:
            msgs.append(pickle.loads(body, buffers=bufs))
        except Exception:  # noqa: BLE001 - a garbled pipe is a dead process
            self.on_garbled()
            return False
        return True
