"""Which call process runs which piece, when calls ask for GPUs and CPUs.

A slot (call process) has a shape, a ``Need``: the GPUs it holds (devices of its
own, named to it in ``CUDA_VISIBLE_DEVICES`` when it starts) and the CPUs it
counts (its thread variables). A piece runs only in a slot of its chunk's shape
(a call without a request: the default shape, one GPU on a worker with GPUs).
The pool's devices, CPUs and ``processes`` are handed out whole: a device
belongs to one slot at a time, the CPUs slots count add up to at most the
worker's, and at most ``processes`` slots live at once. So a worker with four
GPUs runs four default calls, two calls asking for two GPUs, or one asking for
four; a worker with 16 CPUs runs two calls asking for 8.

How slots are re-shaped when calls of other shapes come (``place``): pieces are
looked at in queue order. A piece takes an idle slot of its shape; else it
waits for one of its shape that is starting; else a new slot of its shape starts
if the free devices, CPUs and processes allow. Otherwise the piece is blocked,
and nothing behind it starts a slot (so a big request is not starved by small
ones): idle slots of other shapes are retired (killed: they run nothing) until
what they give back makes room, and each slot that finishes its piece later is
retired the same way. A blocked piece retires nothing while a slot of its own
shape is busy, unless retiring idle ones makes room at once. A slot that dies
for another reason (a crash, a time limit, a cancel) starts again with its
shape; a retired one does not. Slots keep their shape while the queue is empty
(warm for the next job of that shape).

Threads: the pool's dispatcher thread only (it owns this object, as it owns
the slots).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence

from .chunk import Chunk, Piece
from .resources import Need, can_run, default_need, slot_environ
from .slotproc import SlotProc

RESHAPE = "reshape"  # a slot's ``killed_for`` when it was retired to make room
SCAN = 256  # pieces looked at per round: later ones wait for the next


class Placement:
    """A pool's devices, CPUs and process count, and who holds what."""

    def __init__(self, processes: int, devices: Sequence[str] = (), cpus: int = 1) -> None:
        self.processes = processes
        self.devices = list(devices)
        self.cpus = cpus
        self.free = list(range(len(self.devices)))  # positions of devices nobody holds
        self.free_cpus = cpus
        self.live = 0  # slots holding resources (until their exit)
        self.default = default_need(self.devices)

    def need(self, chunk: Chunk) -> Need:
        return chunk.need or self.default

    def possible(self, need: Need) -> bool:
        """Whether a call of ``need`` could ever run here."""
        return can_run(need, len(self.devices), self.cpus) and self.processes > 0

    def initial(self) -> list[Need]:
        """The shapes of the slots a pool starts with: ``processes`` default slots,
        at most one per device where there are devices."""
        n = min(self.processes, len(self.devices)) if self.devices else self.processes
        return [self.default] * n

    def fits(self, need: Need) -> bool:
        return (
            self.live < self.processes
            and need.gpus <= len(self.free)
            and need.cpus <= self.free_cpus
        )

    def take(self, need: Need) -> tuple[tuple[int, ...], str, dict[str, str]]:
        """Hand out ``need``: (device positions, their ids "0,1", the slot's variables)."""
        held, self.free = tuple(self.free[: need.gpus]), self.free[need.gpus :]
        self.free_cpus -= need.cpus
        self.live += 1
        env = slot_environ(self.devices, held, need.cpus) if self.devices or need.cpus else {}
        return held, ",".join(self.devices[k] for k in held), env

    def release(self, s: SlotProc) -> None:
        """``s`` has exited: what it held is free again."""
        self.free = sorted(self.free + list(s.held))
        self.free_cpus += s.need.cpus
        self.live -= 1

    def place(
        self,
        queue: collections.deque[Piece],
        slots: Callable[[], Sequence[SlotProc]],
        spawn: Callable[[Need], None],
    ) -> None:
        """Start queued pieces in idle slots of their shape, start slots of the
        shapes the queue needs, retire idle slots to make room (module docstring)."""
        now = slots()
        idle = [s for s in now if s.piece is None and s.up and not s.killed_for]
        starting = [s for s in now if not s.up and not s.killed_for]
        k = 0
        while k < len(queue) and k < SCAN:
            need = queue[k].chunk.need or self.default
            s = _first(idle, need)
            if s is not None:
                idle.remove(s)
                piece = queue[k]
                del queue[k]
                piece.chunk.started = True
                s.send(piece, ahead=False)
                continue
            s = _first(starting, need)
            if s is not None:  # it takes this piece once it is up
                starting.remove(s)
                k += 1
                continue
            if self.fits(need):
                spawn(need)
                k += 1
                continue
            self._make_room(need, idle, slots())
            return

    def _make_room(self, need: Need, idle: list[SlotProc], slots: Sequence[SlotProc]) -> None:
        """Retire idle slots of other shapes until ``need`` fits (counting what slots
        being retired give back)."""
        leaving = [s for s in slots if s.killed_for == RESHAPE]
        free_g = len(self.free) + sum(len(s.held) for s in leaving)
        free_c = self.free_cpus + sum(s.need.cpus for s in leaving)
        free_n = self.processes - self.live + len(leaving)
        others = [s for s in idle if s.need != need]
        if any(s.need == need and s.killed_for != RESHAPE for s in slots):
            # one of its shape will be free again: retire others only if that makes room now
            if (
                need.gpus > free_g + sum(len(s.held) for s in others)
                or need.cpus > free_c + sum(s.need.cpus for s in others)
                or free_n + len(others) < 1
            ):
                return
        for s in others:
            short_g, short_c = need.gpus > free_g, need.cpus > free_c
            if not (short_g or short_c or free_n < 1):
                return
            if (short_g and s.held) or (short_c and s.need.cpus) or free_n < 1:
                s.kill(RESHAPE)
                free_g, free_c, free_n = free_g + len(s.held), free_c + s.need.cpus, free_n + 1


def _first(slots: list[SlotProc], need: Need) -> SlotProc | None:
    for s in slots:
        if s.need == need:
            return s
    return None
