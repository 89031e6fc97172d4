"""What runs calls: shared by the RabbitMQ worker and the local backend.

A ``Chunk`` (``chunk.py``, built by ``Chunk.from_task``) goes to a ``Pool``
(``pool.py``) of warm slot processes: ``slotproc.py`` is the parent side of
one, ``slot.py`` the process itself (run by path, with ``slotio.py``,
``records.py`` and ``tracebacks.py``); ``outcomes.py`` turns what slots
report, and what the pool decides (cancelled, lost, timed out, retried), into
results. What happens is told to a Reporter,
the ``EventReporter`` of ``reporter.py``: monitoring into an ``EventBuffer``
(``events.py``), outcomes to a sink the worker or the local backend owns.
Decisions that need no state of a pool live in ``scheduler.py``; jobs
cancelled lately in ``cancels.py``; versions and whether two sides can share
pickles in ``versions.py``.

Threads: the pool's dispatcher thread (``dispatcher.py``) reads the slots'
pipes, writes the pool's state and calls the Reporter; callers (the worker's
I/O thread, the kernel) only post to it; the events flusher thread sends
event batches. In a slot process, the main thread runs calls and a watchdog
thread sends results that wait. Each module's docstring says who owns what.

Standard library and cloudpickle only (it runs inside slim worker images).
"""
