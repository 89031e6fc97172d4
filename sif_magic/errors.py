"""Exceptions of sif_magic. Every message says what to do next.

::

    SifMagicError
     +-- ConfigError           bad or missing configuration (URL, key, option)
     +-- BrokerError           RabbitMQ unreachable, refused credentials, no vhost ...
     +-- NoWorkersError        nobody consumes the runtime's queue
     +-- IncompatibleWorkerError  worker's Python / cloudpickle cannot run our functions
     +-- SerializationError    a function, argument or result cannot be pickled, or is too big
     +-- RemoteError           the call raised on the worker (carries its traceback)
     +-- CallTimeoutError      the call ran past its --timeout and was killed
     +-- WorkerLostError       the call's process or worker died under it
     +-- CancelledError        the call was cancelled
     +-- UpstreamError         a pipeline's call whose input, a call of the upstream job, failed

Errors cross the wire as ``{"type", "message", "frames"}`` whose ``type`` is
the class's ``wire_name`` (``sif_magic.errors.SerializationError``);
``error_class`` maps it back through one table, ``ERROR_TYPES``, made of every
class of this module, so a worker's SerializationError reaches the notebook as
a SerializationError. Any other type arrives as a RemoteError.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

# scheme://user: then the password, up to the LAST '@' before whitespace or the next URL
# of a comma-separated list: a password may hold '@', ':' or '/' (unencoded); masking
# too much beats showing part of one.
_URL_PASSWORD = re.compile(
    r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/\s]*:)((?:(?!,[a-zA-Z][a-zA-Z0-9+.-]*://)\S)*)(@)"
)


def mask_url(text: str) -> str:
    """Replace the password of every URL (amqp, amqps or a mistyped scheme) with ``***``.

    The password runs to the last ``@`` of its word, so one that holds ``@``, ``:`` or
    ``/`` is hidden whole."""
    return _URL_PASSWORD.sub(r"\1***\3", text)


class SifMagicError(Exception):
    """Base class of every sif_magic error."""

    def __str__(self) -> str:  # never let a URL password out, whatever the message
        return mask_url(super().__str__())


class ConfigError(SifMagicError):
    pass


class ResourcesError(ConfigError):
    """A call asks for more GPUs or CPUs than any worker has."""


class BrokerError(SifMagicError):
    pass


class NoWorkersError(SifMagicError):
    pass


class IncompatibleWorkerError(SifMagicError):
    pass


class SerializationError(SifMagicError):
    pass


class CancelledError(SifMagicError):
    pass


class CallTimeoutError(SifMagicError):
    pass


class UpstreamError(SifMagicError):
    """A call of a pipeline (``map_job(g, job1)``) did not run: its input was to be
    the result of a call of the upstream job, which failed; the message names both."""


class WorkerLostError(SifMagicError):
    pass


class Frame(NamedTuple):
    """One frame of a remote traceback: the file the code was written in (an
    IPython cell's for code of the notebook), the line, the function, its source."""

    filename: str
    lineno: int
    name: str
    line: str


class RemoteError(SifMagicError):
    """An exception raised by a call on a worker.

    ``ename``/``evalue`` name the remote exception, ``frames`` its traceback
    (user frames only) as ``Frame(filename, lineno, name, line)``; ``exception``
    is the original exception object when it could be unpickled here.
    """

    def __init__(
        self,
        ename: str,
        evalue: str,
        frames: list[Frame] | None = None,
        *,
        index: int | None = None,
        host: str = "",
        worker: str = "",
        exception: BaseException | None = None,
    ) -> None:
        super().__init__(f"{ename}: {evalue}")
        self.ename = ename
        self.evalue = evalue
        self.frames = [Frame(*f) for f in frames or ()]
        self.index = index
        self.host = host
        self.worker = worker
        self.exception = exception
        self.hint = ""  # what to do about it (a module the workers lack: ``_hints``)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_remote,
            (self.ename, self.evalue, self.frames, self.index, self.host, self.worker),
        )

    def remote_traceback(self) -> str:
        lines = ["Traceback (most recent call last):"]
        for filename, lineno, name, line in self.frames:
            lines.append(f'  File "{filename}", line {lineno}, in {name}')
            if line:
                lines.append(f"    {line.strip()}")
        lines.append(f"{self.ename}: {self.evalue}" if self.evalue else self.ename)
        return "\n".join(lines)

    def _where(self) -> str:
        where = f"call {self.index}" if self.index is not None else "a call"
        if self.host:
            where += f" on {self.host}"
        return where

    def __str__(self) -> str:
        hint = f"\n{self.hint}" if self.hint else ""
        return mask_url(
            f"{self.ename}: {self.evalue}\n[{self._where()}]\n{self.remote_traceback()}{hint}"
        )

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing our own (useless) local frames.
        red, cyan, green, bold, reset = "\x1b[31m", "\x1b[36m", "\x1b[32m", "\x1b[1m", "\x1b[0m"
        out = [f"{red}{'-' * 75}{reset}", f"{red}{bold}RemoteError{reset} in {self._where()}:"]
        for filename, lineno, name, line in self.frames:
            out.append(f"  File {green}{filename}{reset}, line {lineno}, in {cyan}{name}{reset}")
            if line:
                out.append(f"    {line.strip()}")
        out.append(f"{red}{bold}{self.ename}{reset}: {self.evalue}")
        if self.hint:
            out.append(f"{bold}{self.hint}{reset}")
        return [mask_url(x) for x in out]


def _rebuild_remote(ename, evalue, frames, index, host, worker):  # noqa: ANN001, ANN202
    return RemoteError(ename, evalue, frames, index=index, host=host, worker=worker)


def wire_name(cls: type[BaseException]) -> str:
    """The name an exception class travels under (what ``_slot.describe_exception``
    writes for an exception raised on a worker)."""
    if cls.__module__ in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _family(cls: type[SifMagicError]) -> list[type[SifMagicError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _family(sub)
    return out


# every error of ours by the name it travels under: built from the hierarchy, so a
# class added above is in it (tests/test_errors.py checks each one crosses the wire)
ERROR_TYPES: dict[str, type[SifMagicError]] = {
    wire_name(c): c for c in _family(SifMagicError) if c.__module__ == __name__
}


def error_class(name: str) -> type[SifMagicError] | None:
    """The class of ours a wire error ``type`` names, None for any other (a user's
    exception, which the notebook shows as a RemoteError)."""
    return ERROR_TYPES.get(name)
