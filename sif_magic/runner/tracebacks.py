"""What a failed call reports about its exception, and how code is named across processes.

``describe_exception`` turns an exception raised by a call into the error
record that travels back (type, message, the user's frames and a key of each
frame's code), dropping the call runner's own frames. ``code_key`` names a code
object by what a pickler must keep of it; the client keys the code it ships the
same way (``_origins``) to show a remote frame in the file it came from.

Both sides import this: the slot process (loaded with ``slot.py``) and the
client. Standard library only. Threads: pure functions.
"""

from __future__ import annotations

import hashlib
import os
import traceback
import types

# the call runner, whose frames sit at the top of every traceback of a call
_RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slot.py")


def code_key(code: types.CodeType) -> str:
    """What names a code object whatever a pickler writes as its file: a hash of
    its name, first line, bytecode, names and constants, the parts a pickler must
    keep for the code to run and for its line numbers to mean anything.

    The client keys the code objects it ships the same way (``_origins``) and
    maps a frame whose key it knows back to the file the code came from:
    cloudpickle 3.1.3 sets ``co_filename`` of code pickled by value to
    ``"<dynamic-code>"``, older releases keep the client's path."""
    h = hashlib.blake2b(digest_size=8)
    head = (code.co_name, code.co_firstlineno, code.co_names, code.co_varnames, code.co_freevars)
    h.update(repr(head).encode("utf-8", "backslashreplace"))
    h.update(code.co_code)
    h.update(_const_text(code.co_consts).encode("utf-8", "backslashreplace"))
    return h.hexdigest()


def _const_text(c: object) -> str:
    """Constants as text that is the same in every process (a nested code object
    by its name and line: its own key covers the rest)."""
    if isinstance(c, types.CodeType):
        return f"<code {c.co_name} {c.co_firstlineno}>"
    if isinstance(c, tuple):
        return "(" + ",".join(map(_const_text, c)) + ")"
    if isinstance(c, frozenset):  # its order follows string hashes, which differ per process
        return "{" + ",".join(sorted(map(_const_text, c))) + "}"
    return f"{type(c).__name__}:{c!r}"


def _user_frames(tb: object) -> tuple[list[list], list[str]]:
    """The traceback's frames as ``[filename, lineno, name, line]`` and the
    ``code_key`` of each frame's code (taken from the frame, not its file name)."""
    walked = list(traceback.walk_tb(tb))  # type: ignore[arg-type]
    # drop our own frames (the runner) at the top of the stack
    while walked and os.path.abspath(walked[0][0].f_code.co_filename) == _RUNNER:
        walked.pop(0)
    frames = traceback.StackSummary.extract(iter(walked))
    keys: dict[int, str] = {}  # a recursion repeats one code a thousand times
    codes = []
    for frame, _ in walked:
        code = frame.f_code
        key = keys.get(id(code))
        if key is None:
            key = keys[id(code)] = code_key(code)
        codes.append(key)
    return [[f.filename, f.lineno or 0, f.name, f.line or ""] for f in frames], codes


def describe_exception(e: BaseException) -> dict:
    t = type(e)
    name = (
        t.__qualname__
        if t.__module__ in ("builtins", "__main__")
        else f"{t.__module__}.{t.__qualname__}"
    )
    try:
        message = str(e)
    except Exception:
        message = f"<unprintable {name}>"
    frames, codes = _user_frames(e.__traceback__)
    return {"type": name, "message": message, "frames": frames, "codes": codes}
