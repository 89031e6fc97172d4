"""What a cached result is keyed by: the function (its code and what that code
uses) and the input (its pickled bytes).

The function's key must not change when the same cell runs again in a new
kernel, and cloudpickle's bytes do (a cell's code object carries the kernel's
temporary file name, line numbers, the order of sets); so the key hashes what
decides what the function does: its bytecode, names and constants, recursively
through nested functions, the functions and classes of the notebook it calls,
its defaults, closure values and the globals it reads (data by their pickle,
modules and importable functions by name and version). An input's key is the
hash of its pickle: for the numbers, strings, tuples, lists, dicts, paths and
arrays that inputs usually are, the same value pickles to the same bytes (a
set of strings may not, across kernels: its calls then simply run again).

Threads: the kernel thread (``Executor.map_job`` with ``resume``). No state.
"""

from __future__ import annotations

import dis
import functools
import hashlib
import pickle
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle

KEY_BYTES = 16  # bytes of sha256 kept per input key


def _by_reference(obj: Any) -> bool:
    """Would cloudpickle send ``obj`` by name (an importable module's function or class)?"""
    check = getattr(cloudpickle.cloudpickle, "_should_pickle_by_reference", None)
    if check is not None:
        try:
            return bool(check(obj))
        except Exception:  # noqa: BLE001 - then look for ourselves
            pass
    module = getattr(obj, "__module__", None)
    return module not in (None, "__main__") and module in sys.modules


def _module_version(module_name: str) -> str:
    """An installed module's version; for the user's own (a module that travels with
    the job, ``_ship``: its version tells nothing), a hash of the source it and the
    local modules it imports have now, so an edited file makes new keys."""
    top_name = module_name.partition(".")[0]
    top = sys.modules.get(top_name)
    version = str(getattr(top, "__version__", ""))
    from .._ship import plan

    try:
        bundle = plan([top_name], max_mb=1e9).bundle
    except Exception:  # noqa: BLE001 - unreadable: then only its version says
        bundle = b""
    return f"{version}#{hashlib.sha256(bundle).hexdigest()[:16]}" if bundle else version


class _Hasher:
    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.seen: dict[int, int] = {}  # id -> order of first visit (recursion)

    def put(self, tag: str, data: bytes = b"") -> None:
        self.h.update(f"{tag}:{len(data)}:".encode())
        self.h.update(data)

    def code(self, co: types.CodeType) -> None:
        self.put("code", co.co_code)
        self.put(
            "names", repr((co.co_names, co.co_varnames, co.co_freevars, co.co_cellvars)).encode()
        )
        self.put("shape", repr((co.co_argcount, co.co_kwonlyargcount, co.co_flags)).encode())
        for const in co.co_consts:
            if isinstance(const, types.CodeType):
                self.code(const)
            elif isinstance(const, frozenset):  # `x in {"a", "b"}`: order varies by kernel
                self.put("fset", repr(sorted(map(repr, const))).encode())
            else:
                self.put("const", repr(const).encode())

    def value(self, obj: Any) -> None:
        key = id(obj)
        if key in self.seen:
            self.put("again", str(self.seen[key]).encode())
            return
        self.seen[key] = len(self.seen)
        if isinstance(obj, types.ModuleType):
            self.put("module", f"{obj.__name__}=={_module_version(obj.__name__)}".encode())
        elif isinstance(obj, types.FunctionType | type) and _by_reference(obj):
            name = f"{obj.__module__}.{obj.__qualname__}=={_module_version(obj.__module__)}"
            self.put("ref", name.encode())
        elif isinstance(obj, types.FunctionType):
            self.function(obj)
        elif isinstance(obj, functools.partial):
            self.put("partial")
            self.value(obj.func)
            self.value(obj.args)
            self.value(sorted(obj.keywords.items()))
        elif isinstance(obj, types.MethodType):
            self.put("method")
            self.value(obj.__func__)
            self.value(obj.__self__)
        elif isinstance(obj, type):
            self.put("class", obj.__qualname__.encode())
            for base in obj.__bases__:
                self.value(base)
            for name in sorted(vars(obj)):
                if not name.startswith("__") or name in ("__init__", "__call__"):
                    self.put("attr", name.encode())
                    self.value(vars(obj)[name])
        elif isinstance(obj, staticmethod | classmethod):
            self.value(obj.__func__)
        elif isinstance(obj, property):
            self.put("property")
            for part in (obj.fget, obj.fset, obj.fdel):
                self.value(part)
        else:
            self.put("data", _data_bytes(obj))

    def function(self, fn: types.FunctionType) -> None:
        self.put("function", fn.__qualname__.encode())
        self.code(fn.__code__)
        self.value(fn.__defaults__)
        self.value(sorted((fn.__kwdefaults__ or {}).items()))
        for cell in fn.__closure__ or ():
            try:
                self.value(cell.cell_contents)
            except ValueError:  # an empty cell
                self.put("empty")
        g = fn.__globals__
        for name in sorted(_global_names(fn.__code__)):
            if name in g:
                self.put("global", name.encode())
                self.value(g[name])


_GLOBAL_OPS = {dis.opmap[op] for op in ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL")}


def _global_names(co: types.CodeType) -> set[str]:
    """The globals the code (and the code nested in it) reads or writes: not every name
    of ``co_names``, which also holds attributes and modules imported inside."""
    names = {i.argval for i in dis.get_instructions(co) if i.opcode in _GLOBAL_OPS}
    for const in co.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _data_bytes(obj: Any) -> bytes:
    """The pickle of a value a function uses (cloudpickle's if plain pickle fails)."""
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:  # noqa: BLE001
        pass
    try:
        return cloudpickle.dumps(obj, protocol=5)
    except Exception:  # noqa: BLE001 - it does not decide the key then: its type does
        return f"unpicklable {type(obj).__module__}.{type(obj).__qualname__}".encode()


def function_key(fn: Callable, star: bool = False, env: dict[str, str] | None = None) -> str:
    """32 hex digits that change when ``fn`` (or how it is called) would do otherwise."""
    h = _Hasher()
    h.value(fn)
    h.put("call", repr((bool(star), sorted((env or {}).items()))).encode())
    return h.h.hexdigest()[:32]


def input_keys(items: Sequence[Any]) -> list[bytes]:
    """One KEY_BYTES key per input: the hash of its pickle."""
    keys = []
    for item in items:
        try:
            data = pickle.dumps(item, protocol=5)
        except Exception:  # noqa: BLE001 - make_chunks names what cannot be pickled
            data = cloudpickle.dumps(item, protocol=5)
        keys.append(hashlib.sha256(data).digest()[:KEY_BYTES])
    return keys
