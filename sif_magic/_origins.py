"""Where the code a job ships came from: ``code_key`` -> the file it was written in.

A pickler may rewrite what a shipped code object says about its file:
cloudpickle 3.1.3 sets ``co_filename`` of everything it pickles by value to
``"<dynamic-code>"``, older releases keep the client's path, a later one may do
something else. So tracebacks do not rely on it. When a job is submitted, the
client walks what cloudpickle takes along by value with the function: its code
and the code nested in it (inner functions, lambdas, comprehensions), and the
functions, classes (their methods, properties, static and class methods) and
modules it reaches through globals, closures, defaults, partials and plain
containers, as long as they are defined in the notebook (``__main__``), inside
a function, or in a module registered with ``cloudpickle.register_pickle_by_value``.
Each code object is noted under its ``runner.tracebacks.code_key``; the call process reports
the same key for each frame of a traceback, and ``Job.error`` maps a frame whose
key is here back to its real file (an IPython cell's, so this kernel's linecache
gives its lines). Code imported by reference (installed modules) is left out:
the worker runs its own copy, and its frames keep the file and line it read.
"""

from __future__ import annotations

import functools
import sys
import types
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Any

from .runner.tracebacks import code_key

MAX_STEPS = 10_000  # data objects looked at per job, at most (~2 µs each; cloudpickle
# pickles all of them too, so the walk never costs more than the pickling)
MAX_ITEMS = 1_000  # elements looked at per list, dict or set
_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), memoryview, range)
_CONTAINERS = (list, tuple, set, frozenset, dict)
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement or type()
_SKIP, _ITEMS, _INSTANCE, _FUNCTION, _CLASS, _MODULE = (object() for _ in range(6))
_REFERS: list[tuple[type, Callable[[Any], tuple]]] = [  # what else refers to code
    (types.MethodType, lambda m: (m.__func__, m.__self__)),
    (staticmethod, lambda m: (m.__func__,)),
    (classmethod, lambda m: (m.__func__,)),
    (property, lambda p: (p.fget, p.fset, p.fdel)),
    (functools.partial, lambda p: (p.func, p.args, p.keywords)),
]


def code_origins(fn: Any) -> dict[str, str]:
    """``{code_key: filename}`` of every code object shipped by value with ``fn``
    (as many as were found: an object that fails to be looked at ends the walk,
    never the job)."""
    walk = _Walk()
    try:
        walk.run(fn)
    except Exception:  # noqa: BLE001 - a proxy object's __getattr__, a broken __dict__ ...
        pass
    return walk.origins


def _registered() -> frozenset[str]:
    import cloudpickle

    listed = getattr(cloudpickle, "list_registry_pickle_by_value", None)
    return frozenset(listed()) if listed is not None else frozenset()


class _Walk:
    """Breadth first, so what the function names directly (its helpers, classes)
    is looked at before the contents of a big list it also names. What code
    refers to (globals, closures, a class's namespace) is always followed; the
    elements of lists, dicts and sets and the attributes of instances only up to
    MAX_STEPS objects in all, MAX_ITEMS per container."""

    def __init__(self) -> None:
        self.origins: dict[str, str] = {}
        self.registered = _registered()
        self.seen: dict[int, Any] = {}  # id -> object (kept alive so ids stay unique)
        self.codes: set[int] = set()  # ids of code objects already keyed
        self.how: dict[type, Any] = {}  # how to look at objects of a type (``classify``)
        self.queue: deque[Any] = deque()
        self.room = MAX_STEPS

    def run(self, root: Any) -> None:
        self.follow((root,))
        queue, seen, visit = self.queue, self.seen, self.visit
        while queue:
            obj = queue.popleft()
            if id(obj) not in seen:
                seen[id(obj)] = obj
                visit(obj)

    def follow(self, items: Any) -> None:
        self.queue.extend(x for x in islice(items, MAX_ITEMS) if not isinstance(x, _LEAVES))

    def data(self, items: Any) -> None:
        if self.room > 0:
            before = len(self.queue)
            self.queue.extend(
                x for x in islice(items, min(self.room, MAX_ITEMS)) if not isinstance(x, _LEAVES)
            )
            self.room -= len(self.queue) - before

    def visit(self, obj: Any) -> None:
        kind = type(obj)
        how = self.how.get(kind)
        if how is None:
            how = self.how[kind] = self.classify(kind)
        if how is _SKIP:
            return
        if how is _ITEMS:
            self.data(obj.values() if isinstance(obj, dict) else obj)
        elif how is _INSTANCE:  # of a class of the notebook (followed once, by classify)
            state = getattr(obj, "__dict__", None)
            if type(state) is dict:
                self.data(state.values())
        elif how is _FUNCTION:
            if self.by_value(obj):
                self.function(obj)
        elif how is _CLASS:
            if self.by_value(obj):
                self.follow(vars(obj).values())
                self.follow(obj.__bases__)
        elif how is _MODULE:
            if self.module_by_value(obj.__name__):  # cloudpickle ships its whole namespace
                self.follow(vars(obj).values())
        else:  # methods, static and class methods, properties, partials
            self.follow(how(obj))

    def classify(self, kind: type) -> Any:
        """How to look at objects of ``kind`` (decided once per type)."""
        if issubclass(kind, _CONTAINERS):
            if kind not in _CONTAINERS and self.by_value(kind):  # a NamedTuple of the notebook
                self.follow((kind,))
            return _ITEMS
        if issubclass(kind, types.FunctionType):
            return _FUNCTION
        if issubclass(kind, type):
            return _CLASS
        if issubclass(kind, types.ModuleType):
            return _MODULE
        for base, refs in _REFERS:
            if issubclass(kind, base):
                return refs
        if self.by_value(kind):
            self.follow((kind,))
            return _INSTANCE
        return _SKIP

    def function(self, fn: types.FunctionType) -> None:
        names: set[str] = set()
        codes = [fn.__code__]
        while codes:
            code = codes.pop()
            if id(code) in self.codes:
                continue
            self.codes.add(id(code))  # kept alive by the function, in ``seen``
            self.origins.setdefault(code_key(code), code.co_filename)
            names.update(code.co_names)
            codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
        g = fn.__globals__
        self.follow(g[name] for name in names if name in g)
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # an empty cell
                pass
        self.follow((*cells, fn.__defaults__, fn.__kwdefaults__, fn.__dict__))

    def by_value(self, obj: Any) -> bool:
        """Does cloudpickle pickle this function or class by value? (Its rule: unless
        ``module.qualname`` imports as this very object from a module that is not
        ``__main__`` and not registered to be pickled by value.)"""
        if isinstance(obj, type) and not obj.__flags__ & _HEAPTYPE:
            return False  # a type written in C (int, a descriptor type ...): no code to ship
        module_name = getattr(obj, "__module__", None)
        if not isinstance(module_name, str) or module_name == "__main__":
            return True
        if self.module_by_value(module_name):
            return True
        found: Any = sys.modules.get(module_name)
        for part in getattr(obj, "__qualname__", "<locals>").split("."):
            if found is None or part == "<locals>":
                return True
            found = getattr(found, part, None)
        return found is not obj

    def module_by_value(self, name: str) -> bool:
        if name not in sys.modules:
            return True
        parts = name.split(".")
        return any(".".join(parts[:k]) in self.registered for k in range(1, len(parts) + 1))
