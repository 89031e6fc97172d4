"""Work and control records: Task (a chunk of calls), JobInfo (what a job is, first
in its result queue), Heartbeat (a worker's presence), Control (cancel / ping /
shutdown).

Threads: any. Nothing here holds state; every record is built by one thread and
handed on, never shared while it changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import taskmeta
from .framing import (
    ProtocolError,
    _buffers_of,
    _json_object,
    _require,
    compact_json,
    pack,
    pack_parts,
    unpack,
)


@dataclass(frozen=True)
class Task:
    """A chunk of calls of one job.

    ``func`` is the cloudpickled function (identical for every chunk of a job,
    so workers cache it by ``func_hash``); ``args`` is the cloudpickled list of
    this chunk's items, in the order of ``calls`` (the calls' indices in the job),
    ``buffers`` its out-of-band buffers (pickle protocol 5: the arrays among the
    items, as raw memory), parts of the body after ``args`` (meta ``bufs``: their
    number, absent when none). Decoded, they are views of the body.
    """

    job_id: str
    chunk: int
    calls: list[int] | range  # a range: the client's consecutive calls (a list on the wire)
    reply_to: str
    func: bytes
    args: bytes
    func_hash: str = ""
    star: bool = False  # call f(*item) instead of f(item)
    timeout: float | None = None
    retries: int = 0
    max_lost: int = 3
    env: dict[str, str] = field(default_factory=dict)
    python: str = ""  # "3.11" of the client
    cloudpickle: str = ""  # cloudpickle version of the client
    client: str = ""  # session id of the client, for logs
    only: list[int] | None = None  # positions of ``calls`` to run (after a split); None: all
    lost: int = 0  # from the HDR_LOST header, not the body
    # what each call needs, e.g. {"gpus": 2, "cpus": 8} (runner/resources.py); None: nothing
    resources: dict[str, int] | None = None
    buffers: list[Any] | tuple = ()  # bytes-like, each a part of the body

    def encode(self) -> bytes:
        return pack(*self._fields())

    def encode_parts(self) -> list[Any]:
        """The body ``encode`` gives, as its pieces (``framing.pack_parts``)."""
        return pack_parts(*self._fields())

    def _fields(self) -> tuple[Any, ...]:
        job_fields = {
            "reply_to": self.reply_to,
            "func_hash": self.func_hash,
            "star": self.star,
            "timeout": self.timeout,
            "retries": self.retries,
            "max_lost": self.max_lost,
            "env": self.env,
            "python": self.python,
            "cloudpickle": self.cloudpickle,
            "client": self.client,
        }
        tail: dict[str, Any] = {}
        if self.only is not None:
            tail["only"] = self.only
        if self.resources:  # absent when none: a task without it has the bytes of before
            tail["resources"] = self.resources
        if self.buffers:  # absent when none, as "resources"
            tail["bufs"] = len(self.buffers)
        meta = taskmeta.encode(self.job_id, self.chunk, self.calls, job_fields, tail)
        return (meta, self.func, self.args, *self.buffers)

    @classmethod
    def decode(cls, body: bytes, lost: int = 0) -> Task:
        meta, parts = unpack(body, 2, taskmeta.decode)
        buffers = _buffers_of(meta, parts, 2)
        func, args = parts[:2]
        _require(meta, "job", "chunk", "calls", "reply_to")
        calls = meta["calls"]
        if not isinstance(calls, list) or not all(isinstance(c, int) for c in calls):
            raise ProtocolError("task 'calls' must be a list of integers")
        resources = meta.get("resources")
        if resources is not None and not (
            isinstance(resources, dict)
            and all(isinstance(k, str) and type(v) is int for k, v in resources.items())
        ):
            raise ProtocolError("task 'resources' must map names to integers")
        return cls(
            job_id=str(meta["job"]),
            chunk=int(meta["chunk"]),
            calls=calls,
            reply_to=str(meta["reply_to"]),
            func=bytes(func),
            args=bytes(args),
            func_hash=str(meta.get("func_hash", "")),
            star=bool(meta.get("star", False)),
            timeout=meta.get("timeout"),
            retries=int(meta.get("retries", 0)),
            max_lost=int(meta.get("max_lost", 3)),
            env=dict(meta.get("env") or {}),
            python=str(meta.get("python", "")),
            cloudpickle=str(meta.get("cloudpickle", "")),
            client=str(meta.get("client", "")),
            only=list(only) if isinstance(only := meta.get("only"), list) else only,
            lost=lost,
            resources=resources or None,
            buffers=buffers,
        )


@dataclass(frozen=True)
class JobInfo:
    """The first message of every result queue (type ``jobinfo``): what a client
    needs to follow the job without having started it (``attach``).

    ``n`` calls, the job's ``name``, its ``errors`` policy, the ``runtime`` its
    tasks went to, when it was ``created`` (epoch seconds) and in how many
    ``chunks``. JSON with Python's default separators (as version 2 sends it)."""

    job_id: str
    n: int
    name: str = ""
    errors: str = "raise"
    runtime: str = ""
    created: float = 0.0
    chunks: int = 0

    def encode(self) -> bytes:
        return json.dumps(
            {
                "job": self.job_id,
                "n": self.n,
                "name": self.name,
                "errors": self.errors,
                "runtime": self.runtime,
                "created": self.created,
                "chunks": self.chunks,
            }
        ).encode()

    @classmethod
    def decode(cls, body: bytes) -> JobInfo:
        """Fields missing from the body keep their defaults (``runtime`` '': the
        reader's own; ``created`` 0: unknown)."""
        d = _json_object(body)
        _require(d, "job", "n")
        try:
            return cls(
                job_id=str(d["job"]),
                n=int(d["n"]),
                name=str(d.get("name", "")),
                errors=str(d.get("errors", "raise")),
                runtime=str(d.get("runtime", "")),
                created=float(d.get("created", 0.0)),
                chunks=int(d.get("chunks", 0)),
            )
        except (TypeError, ValueError) as e:
            raise ProtocolError(f"malformed jobinfo: {e}") from None


@dataclass(frozen=True)
class Heartbeat:
    worker: str
    host: str
    pid: int
    runtime: str
    slots: int
    busy: int
    python: str
    cloudpickle: str
    sif_magic: str
    t: float
    started: float = 0.0
    done: int = 0
    failed: int = 0
    container: str = ""  # e.g. "singularity instance://w1", "none"
    slurm_job: str = ""
    interval: float = 2.0
    state: str = "up"  # up | bye
    # what the worker has (runner/resources.py), sent only when set: GPU ids, the CPUs
    # it hands to calls that ask for some, and each call process's devices ("0,1")
    gpus: list[str] = field(default_factory=list)
    cpus: int = 0
    slot_devices: list[str] = field(default_factory=list)
    # [path, id] of the spill root it reads and writes (runner/spill.py), sent only when
    # set: a client whose root has the same path and id sends big arrays through it
    spill: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        d = dict(self.__dict__)
        for name in _OPTIONAL_HEARTBEAT:
            if not d[name]:  # absent when unset: the bytes of a worker without resources
                del d[name]
        return compact_json(d).encode()

    @classmethod
    def decode(cls, body: bytes) -> Heartbeat:
        d = _json_object(body)
        _require(d, "worker", "host", "pid", "runtime", "slots", "t")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as e:
            raise ProtocolError(f"malformed heartbeat: {e}") from None


_OPTIONAL_HEARTBEAT = ("gpus", "cpus", "slot_devices", "spill")


# -- control -----------------------------------------------------------------


@dataclass(frozen=True)
class Control:
    """``op`` is ``cancel`` (job_id, optional calls), ``ping`` (answer with a
    heartbeat now), ``shutdown`` (worker id or runtime, or everyone) or ``hold``
    (worker id: a scaler keeps it ``HOLD_SECONDS`` more from idling out)."""

    op: str
    job_id: str = ""
    calls: list[int] | None = None
    worker: str = ""
    runtime: str = ""

    def encode(self) -> bytes:
        return compact_json(self.__dict__).encode()

    @classmethod
    def decode(cls, body: bytes) -> Control:
        d = _json_object(body)
        _require(d, "op")
        if d["op"] not in ("cancel", "ping", "shutdown", "hold"):
            raise ProtocolError(f"unknown control op {d['op']!r}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})
