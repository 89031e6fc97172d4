"""Advice for a whole job from its failures: a module its workers could not import.

A function that imports a package the workers' environment lacks fails in every
call with ``ModuleNotFoundError``. ``JobAdvice`` folds a job's error records
(each read once) into calls per missing top-level module; ``advice`` turns one
of them into the job's one message about it: which module, whether this kernel
has it (a module of the user's own that was not shipped, or an installed
distribution and its version), where the calls ran (the runtime and the
containers its workers reported) and the command that adds it.

Threads: ``JobAdvice.fold`` runs under the Job's lock, on any thread that asks
(the Job's reader methods); ``advice`` reads this kernel's environment and what
it is given.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import sys
from itertools import islice
from typing import Any

from .runner import shipped

_MISSING = re.compile(r"No module named '([^']+)'")


def missing_module(record: dict[str, Any]) -> str | None:
    """The top-level module an error record says could not be imported, if it does."""
    if record.get("type") != "ModuleNotFoundError":
        return None
    found = _MISSING.search(str(record.get("message", "")))
    return found.group(1).partition(".")[0] if found else None


class JobAdvice:
    """The advice of one job: calls per module its workers could not import, from
    its error records (a dict that only grows: each record is read once), and one
    message per module (kept while its count stands)."""

    def __init__(self, backend: Any, runtime: str, excluded: frozenset[str]) -> None:
        self.backend = backend
        self.runtime = runtime
        self.excluded = excluded
        self.read = 0
        self.calls: dict[str, int] = {}
        self._texts: dict[str, tuple[int, str]] = {}

    def fold(self, errors: dict[int, dict[str, Any]]) -> None:
        """(Under the job's lock.)"""
        if len(errors) > self.read:
            for record in islice(errors.values(), self.read, None):
                top = missing_module(record)
                if top is not None:
                    self.calls[top] = self.calls.get(top, 0) + 1
            self.read = len(errors)

    def messages(self) -> list[str]:
        return [self.message(top) for top in sorted(dict(self.calls))]

    def message(self, top: str) -> str:
        calls = self.calls.get(top, 1)
        kept = self._texts.get(top)
        if kept is None or kept[0] != calls:
            b = self.backend
            rows = b.workers() if b is not None else []
            containers = [r.get("container", "") for r in rows if r.get("runtime") == self.runtime]
            text = advice(
                top,
                calls,
                backend=getattr(b, "name", ""),
                runtime=self.runtime,
                containers=[c for c in containers if c],
                excluded=self.excluded,
            )
            kept = self._texts[top] = (calls, text)
        return kept[1]


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


@functools.lru_cache(maxsize=64)
def kernel_module(top: str) -> tuple[str, str, str, bool] | None:
    """(where, distribution, version, installed) of a module this kernel can import."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    where = spec.origin if spec.has_location else None
    where = where or next(iter(spec.submodule_search_locations or ()), "") or "built in"
    dist = (_distributions().get(top) or [top])[0]
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = ""
    installed = where == "built in" or shipped.is_installed(where, shipped.installed_dirs())
    return where, dist, version, installed


def advice(
    top: str,
    calls: int,
    *,
    backend: str,
    runtime: str,
    containers: list[str],
    excluded: frozenset[str] = frozenset(),
) -> str:
    """One message: the module, whether this kernel has it, where the calls ran, the fix."""
    s = "" if calls == 1 else "s"
    if backend == "local":
        where = f"in the local backend's call processes ({sys.executable})"
    else:
        seen = f" ({', '.join(sorted(set(containers)))})" if containers else ""
        where = f"on the workers of runtime {runtime!r}{seen}"
    text = f"{calls} call{s} failed: No module named {top!r} {where}."
    here = kernel_module(top)
    if here is not None and not here[3]:
        if top in excluded:
            return text + (
                f" It is a module of your own ({here[0]}), left out by ship=-{top}: take "
                "that out of the ship setting and it travels with the function."
            )
        return text + (
            f" It is a module of your own ({here[0]}) that was not found in what the "
            f"function uses (a dynamic import?): ship it with %sif_config ship=+{top} "
            f"(or Executor(ship='+{top}'))."
        )
    if here is None:
        text += " This kernel does not have it either."
        package = top
    else:
        where_here, package, version, _ = here
        text += f" This kernel has it: {package} {version or '(no version)'} ({where_here})."
        package = f"{package}=={version}" if version else package
    if backend == "local":
        if here is None:
            return text + f" Install it in this kernel's environment: %pip install {package}"
        return text + (
            f" The call processes start in {os.getcwd()} and do not see it: put its "
            f"directory on PYTHONPATH, or ship it: %sif_config ship=+{top}"
        )
    image = runtime if runtime.endswith(".sif") else f"{runtime}.sif"
    name = image.removesuffix(".sif")
    named = "" if runtime == image else f" --runtime {runtime}"
    text += (
        f" Add it to the image and rebuild: sif-magic runtime def {name} --packages "
        f"{package}{named} && sif-magic runtime build {image} (give --packages the image's "
        f"other packages too: `sif-magic runtime inspect {image}` shows its definition)."
    )
    if containers and all(c.startswith("none") for c in containers):
        text += f" Its workers run without a container: pip install {package} where they run."
    return text
