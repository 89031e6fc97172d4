"""Pickling on the client: the function once per job, inputs once per chunk.

Every failure becomes a SerializationError that names the culprit (which
global or closure variable of the function, which input) and what to do.

Given a set, the pickling notes in it the name of every module the pickle
refers to: the modules of the functions and classes it refers to by name (the
inputs' classes too), the modules themselves, and what ``import`` statements in
code pickled by value import. ``_ship`` picks the user's own among them.

The arrays among the inputs (anything pickle protocol 5 takes out of band) are
not copied into a chunk's pickle: their memory travels beside it as the chunk's
``buffers`` (``runner.oob``), read when the chunk is sent to a worker or a call
process. So an input array changed in place after ``map`` returned, before its
call ran, is seen changed (as with ProcessPoolExecutor): copy it first if you
mean to change it.
"""

from __future__ import annotations

import dis
import hashlib
import io
import pickle
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from .errors import SerializationError
from .runner import oob, spill

MB = 1024 * 1024
_NAMED = (types.FunctionType, types.BuiltinFunctionType)


def code_imports(code: types.CodeType) -> list[str]:
    """The modules the ``import`` statements of ``code`` (not of the code nested in
    it) name, absolute imports only."""
    found, ins = [], list(dis.get_instructions(code))
    for k, i in enumerate(ins):
        if i.opname == "IMPORT_NAME" and i.argval:
            level = ins[k - 2].argval if k >= 2 and ins[k - 2].opname == "LOAD_CONST" else 0
            if not level:
                found.append(i.argval)
    return found


class _Noting(oob.cloud_pickler()):  # type: ignore[misc]
    """cloudpickle's pickler (memoryviews too), noting the modules the pickle refers
    to in ``modules``."""

    def __init__(self, file: io.BytesIO, modules: set[str], callback: Any = None) -> None:
        super().__init__(file, protocol=5, buffer_callback=callback)
        self.modules = modules

    def reducer_override(self, obj: Any) -> Any:
        reduced = super().reducer_override(obj)
        kind = type(obj)
        if kind is types.CodeType:
            self.modules.update(code_imports(obj))
        elif reduced is NotImplemented and (kind in _NAMED or isinstance(obj, type)):
            module = getattr(obj, "__module__", None)  # pickled by reference: imported there
            if type(module) is str:
                self.modules.add(module)
        elif isinstance(obj, types.ModuleType):
            self.modules.add(obj.__name__)
        return reduced


def _dumps(obj: Any, modules: set[str] | None, buffers: list[memoryview] | None = None) -> bytes:
    """``obj`` pickled; with ``buffers``, its arrays' memory goes there (``oob``)."""
    if modules is None:
        return oob.dumps(obj, buffers, oob.cloud_pickler())
    found: list[pickle.PickleBuffer] = []
    with io.BytesIO() as f:
        _Noting(f, modules, None if buffers is None else found.append).dump(obj)
        if buffers is not None:
            buffers.extend(b.raw() for b in found)
        return f.getvalue()


def dumps_function(fn: Callable, modules: set[str] | None = None) -> tuple[bytes, str]:
    """(pickled function, its sha256) or a SerializationError naming the culprit;
    the modules it refers to are added to ``modules``."""
    try:
        data = _dumps(fn, modules)
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


def dumps_items(
    items: Sequence[Any], first: int, modules: set[str] | None = None
) -> tuple[bytes, list[memoryview]]:
    """The pickle of ``items`` and its out-of-band buffers: the memory of the arrays
    among them, not copied (read when the chunk is sent: see ``oob``)."""
    buffers: list[memoryview] = []
    try:
        return _dumps(list(items), modules, buffers), buffers
    except Exception:
        pass
    for k, item in enumerate(items):
        try:
            oob.dumps(item, None, oob.cloud_pickler())
        except Exception as e:
            raise SerializationError(
                f"input #{first + k} ({type(item).__name__}) cannot be pickled to send it to "
                f"workers: {e}. Pass something picklable instead (a path, the data it holds)."
            ) from None
    raise SerializationError("the inputs cannot be pickled together (a recursive structure?)")


@dataclass
class PreparedChunk:
    number: int
    calls: list[int] | range  # the calls' indices in the job (consecutive: a range)
    args: bytes
    buffers: list[memoryview] = field(default_factory=list)  # of ``args`` (oob)
    # the job's spill directory, if ``args`` and ``buffers`` go there when the chunk is
    # sent (``sendable``): big arrays, written while the chunks before run
    spill_to: str = ""

    def sendable(self) -> tuple[bytes, list[memoryview]]:
        """(inputs part, its buffers) as the chunk travels: a spill reference once its
        file is written (here, the first time: by the thread that sends it), or the
        pickle and its buffers (also where the file cannot be written)."""
        if self.spill_to:
            directory, self.spill_to = self.spill_to, ""
            try:
                self.args = spill.write(directory, "input", self.args, self.buffers)
                self.buffers = []
            except spill.SpillError:
                pass  # inline, as for a worker that does not see the directory
        return self.args, self.buffers

    def payload(self) -> int:
        """Bytes of inputs the chunk carries, in its message or in its file."""
        return len(self.args) + oob.nbytes(self.buffers)


def make_chunks(
    items: Sequence[Any],
    chunksize: int,
    max_bytes: int,
    func_size: int,
    modules: set[str] | None = None,
    spill_dir: str = "",
    arrays_over: int = 0,
) -> list[PreparedChunk]:
    """Split ``items`` into pickled chunks of ``chunksize`` calls and at most ``max_bytes``
    (the modules they refer to are added to ``modules``); one input over that goes to
    a file of ``spill_dir`` and its chunk carries a reference (``runner.spill``), and
    so does a chunk whose arrays take ``arrays_over`` bytes or more (if not 0), once it
    is sent (``PreparedChunk.sendable``; inline where its file cannot be written)."""
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
        blob, buffers = dumps_items(items[a:b], a, modules)
        size = len(blob) + oob.nbytes(buffers)
        if size > limit:
            if b - a == 1 and spill_dir:
                try:
                    ref = spill.write(spill_dir, "input", blob, buffers)
                except spill.SpillError as e:
                    raise SerializationError(f"input #{a}: {e}") from None
                chunks.append(PreparedChunk(len(chunks), [a], ref))
                continue
            if b - a == 1:
                raise SerializationError(
                    f"input #{a} is {size / MB:.1f} MB once pickled, over the "
                    f"{max_bytes / MB:.0f} MB message limit (max_message_mb, at most the broker's "
                    "max_message_size). Put large data "
                    "on storage the workers can read and pass its path instead."
                )
            mid = (a + b) // 2
            stack.append((mid, b))
            stack.append((a, mid))
            continue
        # big arrays off the broker (every worker sees the directory): written when sent
        to = spill_dir if arrays_over and oob.nbytes(buffers) >= arrays_over else ""
        chunks.append(PreparedChunk(len(chunks), range(a, b), blob, buffers, to))
    return chunks


def loads(data: bytes) -> Any:
    return pickle.loads(data)
