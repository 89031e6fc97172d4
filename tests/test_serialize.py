"""Chunking on the client (_serialize.make_chunks): calls per chunk, bytes per message."""

from __future__ import annotations

import pickle
import threading

import pytest

from sif_magic import SerializationError
from sif_magic._serialize import MB, make_chunks


def _items(chunks) -> list:
    return [x for c in chunks for x in pickle.loads(c.args)]


def test_chunks_of_chunksize_calls_in_order() -> None:
    items = list(range(10))
    chunks = make_chunks(items, 4, 10 * MB, 1000)
    assert [c.number for c in chunks] == [0, 1, 2]
    assert [list(c.calls) for c in chunks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert _items(chunks) == items


def test_a_chunk_over_the_message_limit_is_halved_until_it_fits() -> None:
    items = [bytes([k]) * 100_000 for k in range(8)]  # ~100 kB each once pickled
    max_bytes = 64 * 1024 + 250_000  # room for two inputs a message, not three
    chunks = make_chunks(items, 8, max_bytes, 0)
    assert [list(c.calls) for c in chunks] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert all(len(c.args) <= 250_000 for c in chunks)
    assert _items(chunks) == items


def test_one_input_over_the_limit_is_named_with_what_to_do() -> None:
    items = [b"small", b"x" * 300_000, b"small"]
    with pytest.raises(SerializationError, match=r"input #1 is 0\.3 MB once pickled") as e:
        make_chunks(items, 3, 64 * 1024 + 100_000, 0)
    assert "pass its path instead" in str(e.value)


def test_a_function_alone_over_the_limit_says_what_it_captures() -> None:
    with pytest.raises(SerializationError, match="the pickled function alone is 2.0 MB"):
        make_chunks([1], 1, 2 * MB, 2 * MB)


def test_an_unpicklable_input_is_named_by_position() -> None:
    items = [1, 2, threading.Lock(), 4]
    with pytest.raises(SerializationError, match=r"input #2 \(lock\) cannot be pickled"):
        make_chunks(items, 2, 10 * MB, 0)
