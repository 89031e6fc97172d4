"""Errors keep their type across the wire: every SifMagicError raised on a worker
(by the call, or by the machinery around it) reaches the notebook as itself, on
the local backend and on RabbitMQ with a real worker process."""

from __future__ import annotations

import inspect

import pytest

import sif_magic
from sif_magic import Executor, errors
from sif_magic.errors import (
    CallTimeoutError,
    RemoteError,
    SerializationError,
    SifMagicError,
    WorkerLostError,
)

OURS = sorted(
    (c for c in vars(errors).values() if inspect.isclass(c) and issubclass(c, SifMagicError)),
    key=lambda c: c.__name__,
)


def test_the_table_holds_every_error_class_under_its_wire_name() -> None:
    assert set(errors.ERROR_TYPES.values()) == set(OURS)
    for cls in OURS:
        assert errors.error_class(f"sif_magic.errors.{cls.__name__}") is cls
        assert cls.__name__ in sif_magic.__all__  # and users can catch it by name
    assert errors.error_class("ValueError") is None
    assert errors.error_class("mymodule.SerializationError") is None


@pytest.fixture
def ex(any_ex: Executor) -> Executor:
    return any_ex


def test_every_error_raised_in_a_call_arrives_as_itself(ex: Executor) -> None:
    classes = OURS

    def fail(i: int) -> None:
        cls = classes[i]
        if cls is RemoteError:
            raise cls("ValueError", f"boom {i}")
        raise cls(f"boom {i}")

    job = ex.map_job(fail, range(len(classes)), chunksize=1, errors="collect")
    values = job.results(timeout=60)
    for i, cls in enumerate(classes):
        err = job.error(i)
        assert type(err) is cls, f"{cls.__name__} arrived as {type(err).__name__}: {err}"
        assert type(values[i]) is cls
        assert f"boom {i}" in str(err)
        assert job.state(i) == "failed"
    with pytest.raises(classes[0], match="boom 0"):
        ex.map_job(fail, [0]).results(timeout=60)


def test_errors_of_the_machinery_arrive_as_themselves(ex: Executor) -> None:
    def work(x: int) -> object:
        import os
        import threading
        import time

        if x == 0:
            return threading.Lock()  # a result that cannot travel back
        if x == 1:
            time.sleep(30)  # past the time limit
        if x == 2:
            os._exit(3)  # kills its own process
        return x

    job = ex.map_job(work, range(4), chunksize=1, timeout=1.0, errors="collect")
    values = job.results(timeout=60)
    assert values[3] == 3
    assert isinstance(values[0], SerializationError), values[0]
    assert "cannot be pickled to send it back" in str(values[0])
    assert isinstance(values[1], CallTimeoutError), values[1]
    assert "1 s time limit" in str(values[1])
    assert isinstance(values[2], WorkerLostError), values[2]
    assert "exited with code 3" in str(values[2])
    with pytest.raises(SerializationError, match="cannot be pickled"):
        ex.map_job(work, [0]).results(timeout=60)


def test_a_cancelled_call_is_a_cancelled_error(ex: Executor) -> None:
    def slow(x: int) -> int:
        import time

        time.sleep(60)
        return x

    job = ex.map_job(slow, range(3), chunksize=1)
    job.cancel()
    assert job.wait(30)
    assert all(isinstance(job.error(i), errors.CancelledError) for i in range(3))
    with pytest.raises(errors.CancelledError, match="was cancelled"):
        job.results()
