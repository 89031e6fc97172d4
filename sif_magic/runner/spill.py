"""Inputs and results too big for a message, through a directory both sides see.

A pickled input chunk (one input, once chunks are split down to one) or a slot's
pickled results over the message limit are written to a file under the job's
spill directory (``<spill_dir>/<job id>/``, mode 700, files 600; ``spill_dir``
defaults to ``~/.sif_magic/spill``, on the shared home of a cluster) and travel
as a *reference* in their place: ``MAGIC`` then JSON ``{"path", "size",
"sha256"}``. The reference is inside the signed message; the reader checks the
file's size and sha256 against it, so a file changed on disk is refused.

The client writes inputs (``_serialize.make_chunks``), a call process writes
results when its run's environment names a directory and a limit (``ENV_DIR``,
``ENV_OVER``: the client sets them for backends whose messages are bounded);
``load_parts`` reads either kind back.

Big arrays go this way too, under the message limit, when every worker of the
runtime has shown that it sees the client's spill root: a root has an id (a
random token in its file ``.id``, made by whoever needs it first), a worker
sends ``[root, id]`` of the root it sees in its heartbeats (``seen_root``), and
a client whose root has the same path and id sends inputs whose arrays
(out-of-band buffers) add up to ``ENV_ARRAYS`` bytes or more by file, and asks
the call processes to do so with their results; where a file cannot be
written, they travel inline. (RabbitMQ's advice: keep big payloads off the
broker; the nodes of a cluster share the home directory.)
Out-of-band buffers of the pickle
(``oob.py``) follow it in the file, their lengths in the reference (``parts``),
and come back as views of one writable buffer the file is read into. The client
removes a result's file once its values are unpickled (``discard``), a job's
directory once its results are read (or the Job is closed or collected; not
when the process exits: ``attach`` in the next kernel reads them), its inputs once the
job is over, and directories no client touched for the result queues' lifetime
(``sweep``; a client touches those of the jobs it follows: ``keep``).

Standard library only (the slot loads it by path). Threads: any; a file is
written by one thread and read after the message that names it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

Buffer = Any  # bytes, bytearray, memoryview: anything with the buffer protocol

MAGIC = b"SIFSPILL1"
ENV_DIR = "SIF_MAGIC_SPILL_DIR"  # the job's spill directory, for results (set per run)
ENV_OVER = "SIF_MAGIC_SPILL_OVER"  # results pickled bigger than this many bytes spill
ENV_ARRAYS = "SIF_MAGIC_SPILL_ARRAYS"  # results whose arrays take this many bytes spill
ENV_ROOT_ID = "SIF_MAGIC_SPILL_ROOT_ID"  # the id of the client's root (set per run)
ROOT_ENV = "SIF_MAGIC_SPILL_DIR"  # a process's own spill root (config spill_dir)
ID_FILE = ".id"  # a spill root's id: the same path and id on two hosts, the same directory
BLOCK = 1 << 20  # bytes written (or read) and hashed at a time: hashed while in the cache


class SpillError(OSError):
    """A spilled input or result cannot be written or read here."""


def default_dir() -> str:
    home = os.environ.get("SIF_MAGIC_HOME") or os.path.join(os.path.expanduser("~"), ".sif_magic")
    return os.path.join(home, "spill")


def root_id(root: str) -> str:
    """The id of the spill root ``root`` (made, mode 700, with its id, if missing);
    "" where this process cannot read and write it."""
    path = os.path.join(root, ID_FILE)
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        if not os.path.exists(path):
            tmp = f"{path}.{uuid.uuid4().hex[:8]}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(uuid.uuid4().hex)
            try:
                os.link(tmp, path)  # whoever comes first wins; the others read theirs
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        with open(path) as f:
            token = f.read(64).strip()
        if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
            return ""
    except OSError:
        return ""
    return token if len(token) == 32 else ""


def seen_root() -> list[str]:
    """``[root, id]`` of this process's spill root, or [] if it cannot use it (a
    worker says so in its heartbeats)."""
    root = os.path.abspath(os.path.expanduser(os.environ.get(ROOT_ENV) or default_dir()))
    token = root_id(root)
    return [root, token] if token else []


def is_reference(blob: Buffer) -> bool:
    return bytes(blob[: len(MAGIC)]) == MAGIC


def path_of(blob: Buffer) -> str:
    """The path of the file the reference ``blob`` names ("" if it is none)."""
    if not is_reference(blob):
        return ""
    try:
        return str(json.loads(bytes(memoryview(blob)[len(MAGIC) :]))["path"])
    except (ValueError, KeyError, TypeError):
        return ""  # garbled: the slot says so when it loads it


def unreadable(blob: Buffer, seen: Sequence[str] = (), root_id: str = "") -> str:
    """The path of the file the reference ``blob`` names if this process does not see
    the directory it is in (another filesystem, another spill root), else "" (a
    message, or readable). ``seen``: ``[root, id]`` of this process's spill root;
    ``root_id``: the id of the writer's root (the task's ``ENV_ROOT_ID``): a file
    under the same root, the same id, is in a directory seen here even if it is
    missing (lost: its call fails, saying so)."""
    path = path_of(blob)
    if not path:
        return ""
    if seen and root_id == seen[1] and path.startswith(os.path.join(seen[0], "")):
        return ""
    return "" if os.access(path, os.R_OK) else path


def size_of(blob: Buffer) -> int:
    """Bytes ``blob`` stands for: its own, or those of the file it refers to."""
    if not is_reference(blob):
        return len(blob)
    try:
        return int(json.loads(bytes(memoryview(blob)[len(MAGIC) :]))["size"])
    except (ValueError, KeyError, TypeError):
        return len(blob)


def write(directory: str, prefix: str, data: Buffer, buffers: Sequence[Buffer] = ()) -> bytes:
    """Write ``data`` (a pickle) and its out-of-band ``buffers`` to a new file of
    ``directory`` (made mode 700), one after the other; their reference."""
    parts = [memoryview(p).cast("B") for p in (data, *buffers)]
    size = sum(len(p) for p in parts)
    digest = hashlib.sha256()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, f"{prefix}-{uuid.uuid4().hex[:12]}")
        fd = os.open(path + ".part", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb", buffering=0) as f:
            for p in parts:
                for at in range(0, len(p), BLOCK):
                    block = p[at : at + BLOCK]
                    _write_all(f, block)
                    digest.update(block)
        os.rename(path + ".part", path)
    except OSError as e:
        raise SpillError(
            f"cannot write {size / 2**20:.1f} MB to the spill directory {directory} on "
            f"{socket.gethostname()} ({e.strerror or e}): set spill_dir to a directory that "
            "the notebook and the workers can both write (%sif_config spill_dir=/shared/dir)"
        ) from None
    meta: dict = {"path": path, "size": size, "sha256": digest.hexdigest()}
    if buffers:  # absent without: the reference of a plain pickle
        meta["parts"] = [len(p) for p in parts]
    return MAGIC + json.dumps(meta).encode()


def load_parts(blob: Buffer, buffers: Sequence[Buffer] = ()) -> tuple[Buffer, Sequence[Buffer]]:
    """(pickle, its out-of-band buffers): ``blob`` and ``buffers`` themselves, or what
    the file ``blob`` refers to holds (checked; read into one writable buffer)."""
    if not is_reference(blob):
        return blob, buffers
    meta = json.loads(bytes(memoryview(blob)[len(MAGIC) :]))
    path = str(meta["path"])
    digest = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size != meta["size"]:  # (before a buffer of that size is made)
                raise SpillError(f"{path} changed after it was spilled: refused")
            data = bytearray(size)
            view = memoryview(data)
            for at in range(0, len(data), BLOCK):
                block = view[at : at + BLOCK]
                _read_into(f, block)
                digest.update(block)
    except OSError as e:
        raise SpillError(
            f"{path} (spilled beside its message) cannot be read on "
            f"{socket.gethostname()} ({e.strerror or e}): set spill_dir to a directory the "
            "notebook and the workers both see (%sif_config spill_dir=/shared/dir, and "
            "SIF_MAGIC_SPILL_DIR for the workers), or send arrays through the broker "
            "(%sif_config spill_arrays_mb=0)"
        ) from None
    if len(data) != meta["size"] or digest.hexdigest() != meta["sha256"]:
        raise SpillError(f"{path} changed after it was spilled: refused")
    sizes = meta.get("parts") or [len(data)]
    if sum(sizes) != len(data):
        raise SpillError(f"{path}: its parts do not add up to its size: refused")
    view, parts, at = memoryview(data), [], 0
    for n in sizes:
        parts.append(view[at : at + n])
        at += n
    return parts[0], parts[1:]


def _write_all(f: Any, block: memoryview) -> None:
    while block:
        block = block[f.write(block) :]


def _read_into(f: Any, block: memoryview) -> None:
    at = 0
    while at < len(block):
        n = f.readinto(block[at:])
        if not n:
            raise OSError("shorter than when it was written")
        at += n


def discard(blob: Buffer, directory: str) -> None:
    """Remove the file the reference ``blob`` names, if it is one of ``directory``'s
    (a reader done with it; a path elsewhere is never touched)."""
    if not directory or not is_reference(blob):
        return
    try:
        path = str(json.loads(bytes(memoryview(blob)[len(MAGIC) :]))["path"])
        if os.path.dirname(os.path.abspath(path)) == os.path.abspath(directory):
            os.unlink(path)
    except (OSError, ValueError, KeyError, TypeError):
        pass


def remove(directory: str, prefix: str = "") -> None:
    """Remove ``directory`` (with ``prefix``: only its files that start so)."""
    if not directory:
        return
    if not prefix:
        shutil.rmtree(directory, ignore_errors=True)
        return
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def keep(directory: str) -> None:
    """Mark the job directory ``directory`` in use: its mtime becomes now (on NFS the
    server's clock, as for the sweeps that compare it), so no ``sweep`` removes it. A
    client does it for every job it follows, every ``keep_every(result_ttl)`` s."""
    if directory:
        try:
            os.utime(directory)
        except OSError:  # not made yet (nothing spilled), or gone
            pass


def keep_every(older_than: float) -> float:
    """Seconds between two ``keep`` of a job's directory: four per sweep limit at least."""
    return max(0.5, min(SWEEP_EVERY, older_than / 4))


SWEEP_EVERY = 600.0  # seconds between two sweeps of one root by one process
_swept: dict[str, float] = {}  # root -> when this process last swept it


def sweep(root: str, older_than: float) -> None:
    """Remove the job directories of ``root`` untouched for ``older_than`` seconds (the
    result queues' lifetime: a client that follows a job touches its directory,
    ``keep``, however long the job waits, so only those of jobs no client follows any
    more go); a job's start calls it, so a process does it at most every
    ``SWEEP_EVERY`` seconds (a listing and a stat per job folder, on a shared home:
    not at every start)."""
    now = time.time()
    if now - _swept.get(root, 0.0) < SWEEP_EVERY:
        return
    _swept[root] = now
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    limit = time.time() - older_than
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False) and entry.stat().st_mtime < limit:
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            pass
