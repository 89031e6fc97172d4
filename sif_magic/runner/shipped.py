"""The user's modules shipped with a function: their place in the function blob,
and the importer that serves them in a call process.

The client (``_ship.py``) sends the source of the user's own modules, those whose
files live outside the standard library and site-packages, with the function.
The function blob is then ``MAGIC``, the bundle's length, the bundle and the
pickled function; the bundle is a zlib-compressed pickle of ``{module name:
(kind, file, source)}`` (kind ``module``, ``package`` or ``namespace``; ``file``
the client's path, so that ``__file__`` and tracebacks name the real file). A
blob without ``MAGIC`` is a plain pickled function, as before.

In a call process, ``ShippedModules`` keeps the bundles it was given by their
sha256 and serves one at a time, the *active* bundle (that of the function being
loaded or run), through a finder first on ``sys.meta_path``: ``import mylib`` in
the function, in another shipped module, or while unpickling inputs and
functions that refer to ``mylib``, gets the shipped source, run once per bundle
and process. Another bundle taking over moves the previous one's modules out of
``sys.modules`` (kept for when it comes back) and its own in: a module edited
between two jobs makes a new bundle, and the next job runs the new code. A
top-level module the process can import from its own standard library or
site-packages is never served: the image's version wins.

Standard library only: the slot (run by path in the worker image) loads it with
its siblings; the client imports ``wrap``, ``encode`` and ``installed_dirs``.
Threads: the slot's main thread.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import pickle
import struct
import sys
import sysconfig
import types
import zlib
from typing import Any

MAGIC = b"SIFSHIP1"
_LEN = struct.Struct(">Q")
MAX_BUNDLES = 8  # bundles a call process keeps (the active one is never dropped)
KINDS = ("module", "package", "namespace")


def wrap(bundle: bytes, func: bytes) -> bytes:
    """The function blob of ``func`` (a pickle) travelling with ``bundle``."""
    return b"".join((MAGIC, _LEN.pack(len(bundle)), bundle, func)) if bundle else func


def unwrap(blob: bytes) -> tuple[bytes, memoryview | bytes]:
    """(bundle, pickled function) of a function blob; the bundle is b"" if none."""
    if not blob.startswith(MAGIC):
        return b"", blob
    start = len(MAGIC) + _LEN.size
    (size,) = _LEN.unpack_from(blob, len(MAGIC))
    view = memoryview(blob)
    return bytes(view[start : start + size]), view[start + size :]


def encode(modules: dict[str, tuple[str, str, bytes]]) -> bytes:
    return zlib.compress(pickle.dumps(modules, protocol=4), 6)


def decode(bundle: bytes) -> dict[str, tuple[str, str, bytes]]:
    return pickle.loads(zlib.decompress(bundle))


@functools.lru_cache(maxsize=1)
def installed_dirs() -> tuple[str, ...]:
    """This interpreter's standard library and site-packages directories (real paths,
    each ending with a separator); found once (each job's ship plan asks)."""
    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        import site

        dirs.update(site.getsitepackages())
        dirs.add(site.getusersitepackages())
    except Exception:  # noqa: BLE001 - an embedded interpreter without site
        pass
    return tuple(sorted(os.path.join(os.path.realpath(d), "") for d in dirs if d))


def is_installed(path: str, dirs: tuple[str, ...]) -> bool:
    """Is ``path`` part of the interpreter's installation (stdlib, site-packages)?"""
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    return os.path.join(real, "").startswith(dirs)


class _Bundle:
    __slots__ = ("modules", "served", "loaded")

    def __init__(self, modules: dict[str, tuple[str, str, bytes]], installed: list[str]) -> None:
        self.modules = modules
        tops = {name.partition(".")[0] for name in modules}
        finder = importlib.machinery.PathFinder
        # a top-level name this process has installed is left to it (the image wins)
        self.served = {t for t in tops if finder.find_spec(t, installed) is None}
        self.loaded: dict[str, types.ModuleType] = {}  # kept while another bundle is active


class _Loader(importlib.abc.Loader):
    def __init__(self, bundle: _Bundle, name: str) -> None:
        self.bundle = bundle
        self.name = name

    def create_module(self, spec: Any) -> None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        kind, filename, source = self.bundle.modules[self.name]
        if kind != "namespace":
            exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)

    def is_package(self, name: str) -> bool:
        return self.bundle.modules[name][0] != "module"

    def get_source(self, name: str) -> str | None:
        """For tracebacks (linecache) where the file is not on this machine."""
        kind, _, source = self.bundle.modules[name]
        return None if kind == "namespace" else importlib.util.decode_source(source)


class ShippedModules(importlib.abc.MetaPathFinder):
    """The bundles of one call process, and the finder serving the active one."""

    def __init__(self) -> None:
        self.bundles: dict[str, _Bundle] = {}
        self.active: _Bundle | None = None
        self._installed: list[str] | None = None
        sys.meta_path.insert(0, self)

    def take(self, blob: bytes) -> tuple[str, memoryview | bytes]:
        """(bundle key or "", pickled function) of a function blob; the bundle is kept."""
        bundle, func = unwrap(blob)
        if not bundle:
            return "", func
        key = hashlib.sha256(bundle).hexdigest()
        if key not in self.bundles:
            if self._installed is None:
                dirs = installed_dirs()
                self._installed = [p for p in sys.path if p and is_installed(p, dirs)]
            for old in list(self.bundles)[: max(0, len(self.bundles) - MAX_BUNDLES + 1)]:
                if self.bundles[old] is not self.active:
                    del self.bundles[old]
            self.bundles[key] = _Bundle(decode(bundle), self._installed)
        return key, func

    def activate(self, key: str) -> None:
        """Serve the bundle ``key`` (none for ""): the modules of the previous one
        leave ``sys.modules``, as does any other copy of a module the new one serves."""
        new = self.bundles.get(key) if key else None
        old = self.active
        if new is old:
            return
        tops = (old.served if old else set()) | (new.served if new else set())
        for name in [n for n in sys.modules if n.partition(".")[0] in tops]:
            module = sys.modules.pop(name)
            loader = getattr(getattr(module, "__spec__", None), "loader", None)
            if isinstance(loader, _Loader) and loader.bundle is not new:
                loader.bundle.loaded[name] = module
        if new is not None:
            sys.modules.update(new.loaded)
            new.loaded.clear()
        self.active = new

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        b = self.active
        if b is None or name not in b.modules or name.partition(".")[0] not in b.served:
            return None
        kind, filename, _ = b.modules[name]
        loader = _Loader(b, name)
        if kind == "namespace":
            spec = importlib.machinery.ModuleSpec(name, loader, is_package=True)
            spec.submodule_search_locations = [filename]
            return spec
        where = [os.path.dirname(filename)] if kind == "package" else None
        return importlib.util.spec_from_file_location(
            name, filename, loader=loader, submodule_search_locations=where
        )
