"""Fixtures of the fault suite (on top of tests/conftest.py's broker_url, key_file, runtime)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import FaultWorkers

from sif_magic import Executor


@pytest.fixture
def fworkers(broker_url: str, key_file: Path, tmp_path: Path) -> Iterator[FaultWorkers]:
    """Workers on the machine's broker, each in its own session (killable by group)."""
    w = FaultWorkers(broker_url, key_file, tmp_path)
    yield w
    w.stop()


@pytest.fixture
def node_workers(node: Any, key_file: Path, tmp_path: Path) -> Iterator[FaultWorkers]:
    """Workers on the private RabbitMQ node of the test module (its ``node`` fixture)."""
    w = FaultWorkers(node.url, key_file, tmp_path)
    yield w
    w.stop()


@pytest.fixture
def make_ex(key_file: Path) -> Iterator[Callable[..., Executor]]:
    """Executor(backend='rabbitmq', ...) factory; every one is shut down at the end."""
    made: list[Executor] = []

    def make(**options: Any) -> Executor:
        ex = Executor(backend="rabbitmq", key_file=str(key_file), **options)
        made.append(ex)
        return ex

    yield make
    for ex in made:
        try:
            ex.shutdown(wait=False, cancel_futures=True)
        except Exception:  # noqa: BLE001 - a test that broke the executor still cleans up
            pass
