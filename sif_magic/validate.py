"""The one rule for what a user's names and paths may hold.

A runtime name, an image path, a worker id, a SLURM job name, an instance name, a
bind path or a package spec ends up in a shell script (the sbatch script, an
image's runscript and ``%post``), in a definition file or a Dockerfile, in an image
label, in a command line or in an AMQP queue name. Each is quoted where it is
written; this module is the line before that: a value with anything else in it is
refused, with an error that says what is allowed, so that no quoting mistake can
ever turn a name into a command (``ml$(touch X).sif`` once did).

Standard library only (the worker's command imports it); no state, no threads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import ConfigError


def _word(punctuation: str) -> tuple[re.Pattern[str], str]:
    """Letters, digits and ``punctuation``, not starting with '-' (an option, in argv)."""
    pattern = re.compile(rf"(?!-)[\w{re.escape(punctuation)}]+")
    return pattern, f"letters, digits and {' '.join(punctuation)} ('-' not first)"


#: what each kind of value may hold: (pattern of the whole value, what the error says)
RULES: dict[str, tuple[re.Pattern[str], str]] = {
    # runtime names, worker ids, job and instance names: queue names, labels, file names
    "name": (
        re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"),
        "letters, digits, '.', '_' and '-', starting with a letter or digit "
        "(at most 128 characters)",
    ),
    "path": _word("._/+,@%=~-"),  # files and folders
    "image": _word("._/:+,@%=~-"),  # a file, or a reference: docker://python:3.11-slim
    "spec": _word("._-/:@+=<>!~,[]#%*"),  # pip and apt package specs
    # the value of an #SBATCH option (a comment line for bash, read by sbatch)
    "sbatch": (
        re.compile(r"[^\s'\"`$\\;]+"),
        "anything but spaces, quotes, '$', '`', '\\' and ';'",
    ),
}

_NEVER = "spaces, quotes, '$', '`', ';', '\\' and line breaks are not allowed"


def check(kind: str, value: str, what: str, hint: str = "") -> str:
    """``value`` if it fits the ``kind`` of ``RULES``; else ConfigError naming ``what``,
    what is allowed, and ``hint`` (what to do instead)."""
    pattern, allowed = RULES[kind]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        never = "" if kind == "sbatch" else f"; {_NEVER}"
        raise ConfigError(
            f"{what} {value!r} is not allowed: use {allowed}{never}" + (f". {hint}" if hint else "")
        )
    return value


def check_name(value: str, what: str) -> str:
    """A runtime name, worker id, SLURM job name or instance name."""
    return check("name", value, what)


#: what sif_magic adds to a runtime's task queue name for its retry and claim queues
RESERVED_IN_RUNTIME = (".retry", ".claim.")


def check_runtime(value: str, what: str = "runtime name") -> str:
    """A runtime name: a name (``check_name``) that cannot be taken for another
    runtime's retry or claim queue (``tasks.gpu.retry`` is runtime gpu's retry queue,
    so a runtime may not be called ``gpu.retry``)."""
    check_name(value, what)
    if value.endswith(".retry") or ".claim." in value:
        raise ConfigError(
            f"{what} {value!r} is not allowed: a runtime name may not end in '.retry' or "
            "hold '.claim.' (sif_magic names its retry and claim queues so). Rename it, "
            "e.g. with '-' for '.'"
        )
    return value


def check_path(value: str, what: str) -> str:
    """A file or folder that enters a script or a command line."""
    return check("path", value, what, "Rename or move it")


def check_image(value: str, what: str = "--image") -> str:
    """An image file, or a reference to one (``docker://python:3.11-slim``)."""
    return check("image", value, what, "Rename or move it")


def check_spec(value: str, what: str, hint: str = "") -> str:
    """A package spec (pip or apt)."""
    return check("spec", value, what, hint)


def check_bind(value: str) -> str:
    """``SRC``, ``SRC:DST`` or ``SRC:DST:OPTS``, each part a path."""
    parts = value.split(":") if isinstance(value, str) else []
    if not value or not 1 <= len(parts) <= 3 or not all(parts):
        raise ConfigError(f"--bind {value!r}: use SRC, SRC:DST or SRC:DST:ro")
    for part in parts:
        check("path", part, f"--bind {value!r}: the part", "Use SRC, SRC:DST or SRC:DST:ro")
    return value


def check_all(kind: str, values: Iterable[str], what: str, hint: str = "") -> list[str]:
    """``check`` for each of ``values``."""
    return [check(kind, v, what, hint) for v in values]
