"""Which of the user's own modules travel with a job's function, and their bundle.

A notebook's function reaches modules: through its globals and closures, the
``import`` statements inside it, the functions and classes it uses, and the
classes of its inputs. ``_serialize`` notes every module its pickles refer to;
``plan`` keeps those whose files live outside this interpreter's standard
library and site-packages (the notebook's folder, a directory put on
``sys.path``, an editable install of the user's project), follows every
``import`` in their files (at any depth, read with ``ast``, never run) and reads
their sources from disk: a top-level module is its file, a package every
``.py`` file under its directory. The sources go with the function, read
when the job starts (``runner/shipped.py``: a worker serves them unless its
own environment has the module installed, then its version wins).

``ship`` (``%sif_config ship=...``, ``Executor(ship=...)``) adds to or takes
from that: ``+name`` ships a module found nowhere else (a dynamic import, or an
installed pure-Python package the image lacks), ``-name`` never ships it,
``none`` ships only the ``+`` ones. ``ship_max_mb`` bounds the sources: a job
over it fails at once, naming the biggest modules and the fix.

Threads: the thread that starts a job (``Executor.map_job``); ``_IMPORTS`` is a
cache only that thread writes.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import ConfigError, SerializationError
from .runner import shipped

NEVER = frozenset({"__main__", "builtins", "sif_magic", "cloudpickle", "pika", "_sif_magic_slot"})
MAX_FILES = 2000  # files of one package, at most
_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_IMPORTS: dict[bytes, frozenset[str]] = {}  # blake2b of a source -> top-level names it imports


@dataclass(frozen=True)
class Shipped:
    """One top-level module or package that travels with the function."""

    name: str
    path: str  # its file, or its package's directory
    files: int
    size: int  # bytes of source

    def describe(self) -> str:
        files = f"{self.files} files, " if self.files > 1 else ""
        return f"{self.name} ({files}{_size(self.size)})"


@dataclass
class Shipment:
    """What travels with one job's function (``bundle`` b"" when nothing does)."""

    parts: list[Shipped] = field(default_factory=list)
    bundle: bytes = b""
    notes: list[str] = field(default_factory=list)  # found but not shipped, and why
    excluded: frozenset[str] = frozenset()

    def wrap(self, func: bytes) -> bytes:
        return shipped.wrap(self.bundle, func)

    def describe(self) -> str:
        return ", ".join(p.describe() for p in self.parts)


def parse_ship(text: str) -> tuple[bool, set[str], set[str]]:
    """``ship`` as (find modules automatically, names to add, names to leave out)."""
    auto, add, drop = True, set(), set()
    for token in re.split(r"[,\s]+", text.strip()):
        if not token:
            continue
        if token.lower() in ("none", "off"):
            auto = False
            continue
        sign, name = (token[0], token[1:]) if token[0] in "+-" else ("+", token)
        if not _NAME.match(name):
            raise ConfigError(
                f"ship: {token!r} is not a module name; write e.g. ship=+mylib,-bigpkg "
                "(+ ships a module, - never ships it, none turns off finding them)"
            )
        (add if sign == "+" else drop).add(name.partition(".")[0])
    return auto, add, drop


def plan(modules: Iterable[str], setting: str = "", max_mb: float = 10.0) -> Shipment:
    """The user's modules among ``modules`` (and what they import), read and bundled."""
    auto, add, drop = parse_ship(setting)
    todo = sorted(add) + (sorted({m.partition(".")[0] for m in modules}) if auto else [])
    dirs = shipped.installed_dirs()
    seen: set[str] = set()
    found: dict[str, tuple[str, dict[str, tuple[str, str, bytes]]]] = {}
    notes: list[str] = []
    while todo:
        top = todo.pop()
        if top in seen or top in drop or top in NEVER or top in sys.stdlib_module_names:
            continue
        seen.add(top)
        located = _locate(top, dirs, forced=top in add)
        if located is None:
            continue
        if isinstance(located, str):
            notes.append(located)
            continue
        found[top] = located
        if auto:
            for kind, _, source in located[1].values():
                if kind != "namespace":
                    todo.extend(_imports(source))
    parts = [
        Shipped(
            top,
            where,
            sum(kind != "namespace" for kind, _, _ in files.values()),
            sum(len(s) for _, _, s in files.values()),
        )
        for top, (where, files) in sorted(found.items())
    ]
    _check_size(parts, found, max_mb)
    everything = {name: f for _, files in found.values() for name, f in files.items()}
    bundle = shipped.encode(everything) if everything else b""
    return Shipment(parts, bundle, notes, frozenset(drop))


def _locate(
    top: str, dirs: tuple[str, ...], forced: bool
) -> tuple[str, dict[str, tuple[str, str, bytes]]] | str | None:
    """(where, {module: (kind, file, source)}) of a module to ship; a note if it
    cannot travel; None if it is not the user's own (or not found)."""
    module = sys.modules.get(top)
    if module is not None:
        file = getattr(module, "__file__", None)
        locations = list(getattr(module, "__path__", None) or [])
    else:
        try:
            spec = importlib.util.find_spec(top)  # a top-level name: nothing is run
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        file = spec.origin if spec.has_location else None
        locations = list(spec.submodule_search_locations or [])
    where = os.path.dirname(file) if file and locations else file or next(iter(locations), None)
    if not isinstance(where, str) or (not forced and shipped.is_installed(where, dirs)):
        return None
    if not locations:
        if not where.endswith(".py"):
            return f"{top}: {os.path.basename(where)} is not Python source, not shipped"
        return where, {top: ("module", where, _read(where))}
    files: dict[str, tuple[str, str, bytes]] = {}
    for root in locations:
        _walk(top, root, files)
    return where, files


def _walk(top: str, root: str, files: dict[str, tuple[str, str, bytes]]) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d.isidentifier() and d != "__pycache__")
        rel = os.path.relpath(dirpath, root)
        package = ".".join([top, *([] if rel == "." else rel.split(os.sep))])
        if "__init__.py" in filenames:
            init = os.path.join(dirpath, "__init__.py")
            files.setdefault(package, ("package", init, _read(init)))
        else:
            files.setdefault(package, ("namespace", dirpath, b""))
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext == ".py" and stem != "__init__" and stem.isidentifier():
                path = os.path.join(dirpath, name)
                files.setdefault(f"{package}.{stem}", ("module", path, _read(path)))
        if len(files) > MAX_FILES:
            raise SerializationError(
                f"package {top!r} ({root}) has more than {MAX_FILES} modules to ship with "
                f"the function: install it in the worker image and leave it out "
                f"(%sif_config ship=-{top})"
            )


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise SerializationError(f"cannot read {path} to ship it with the function: {e}") from None


def _imports(source: bytes) -> frozenset[str]:
    """The top-level names the absolute imports of ``source`` name (anywhere in it)."""
    key = hashlib.blake2b(source, digest_size=16).digest()
    names = _IMPORTS.get(key)
    if names is None:
        found = set()
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):  # the worker says so when it imports it
            tree = ast.Module(body=[], type_ignores=[])
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name.partition(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.partition(".")[0])
        names = _IMPORTS[key] = frozenset(found)
    return names


def _check_size(parts: list[Shipped], found: dict, max_mb: float) -> None:
    total = sum(p.size for p in parts)
    if total <= max_mb * 1024 * 1024:
        return
    parts = sorted(parts, key=lambda p: -p.size)
    top = parts[0]
    biggest = max(found[top.name][1].values(), key=lambda f: len(f[2]))
    raise SerializationError(
        f"the modules to ship with the function come to {_size(total)}, over "
        f"ship_max_mb={max_mb:g}: " + ", ".join(p.describe() for p in parts[:5]) + f"; the "
        f"biggest file is {biggest[1]} ({_size(len(biggest[2]))}). Install {top.name!r} in "
        f"the worker image (sif-magic runtime def NAME --packages ...) and leave it out: "
        f"%sif_config ship=-{top.name} (Executor(ship='-{top.name}')), or raise the "
        f"limit: %sif_config ship_max_mb={max(1, int(total / 1024 / 1024) + 1)}"
    )


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / 1024 / 1024:.1f} MB"
    return f"{n / 1024:.1f} kB" if n >= 1024 else f"{n} B"
