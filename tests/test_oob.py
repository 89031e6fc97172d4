"""Pickles with out-of-band buffers (runner/oob.py): what travels beside the pickle,
the pipes' framing (blocking reads, and FrameReader on a non-blocking pipe), and
spill files that hold buffers. NumPy is a test dependency only."""

from __future__ import annotations

import os
import pickle
import threading

import numpy as np
import pytest

from sif_magic.runner import oob, spill


def _arrays() -> list:
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    return [
        base,
        base[:, ::2],  # not contiguous: pickled in band
        np.asfortranarray(base),
        np.zeros(0, dtype=np.int32),
        np.arange(10, dtype=np.int8),
        np.array([1 + 2j, 3 - 4j], dtype=np.complex64),
        np.array([True, False]),
        np.array(["ab", "c"]),
        np.datetime64("2024-01-02") + np.arange(3),
    ]


def same(a: object, b: object) -> bool:
    """``b`` is ``a`` come back: an array of its dtype, shape, order and values, a
    memoryview of its format, shape and bytes, or an equal object of its type."""
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.flags.f_contiguous == b.flags.f_contiguous
            and np.array_equal(a, b)
        )
    if isinstance(a, memoryview):
        return isinstance(b, memoryview) and (a.format, a.shape, a.tobytes()) == (
            b.format,
            b.shape,
            b.tobytes(),
        )
    return type(a) is type(b) and a == b


def test_arrays_travel_beside_the_pickle_and_come_back_exact_and_writable() -> None:
    values = [*_arrays(), b"bytes", bytearray(b"ba"), {"plain": [1, 2.5, "x"]}, None]
    buffers: list[memoryview] = []
    data = oob.dumps(values, buffers)
    assert sum(b.nbytes for b in buffers) >= 2 * 24 * 8  # the C and Fortran arrays
    assert len(data) < 2000  # their memory is not in the pickle
    got = oob.loads(data, [bytearray(b) for b in buffers])
    assert all(same(a, b) for a, b in zip(values, got)), got
    assert all(a.flags.writeable for a in got if isinstance(a, np.ndarray))
    in_band = oob.dumps(values, None)  # no list: everything in the pickle
    assert all(same(a, b) for a, b in zip(values, pickle.loads(in_band)))


def test_buffers_are_the_objects_memory_not_copies() -> None:
    a = np.arange(1000, dtype=np.float64)
    buffers: list[memoryview] = []
    oob.dumps([a], buffers)
    (buf,) = buffers
    a[0] = 42.0  # read when sent, not when pickled
    assert np.frombuffer(buf, dtype=np.float64)[0] == 42.0


def test_memoryviews_keep_format_shape_and_read_only_flag() -> None:
    views = [
        memoryview(b"abc"),
        memoryview(bytearray(b"xyz")),
        memoryview(np.arange(12, dtype="i4").reshape(3, 4)),
        memoryview(np.arange(12.0).reshape(3, 4))[::2],
        memoryview(b""),
    ]
    for view in views:
        for buffers in (None, []):
            data = oob.dumps(view, buffers, oob.cloud_pickler())
            got = pickle.loads(data, buffers=[bytearray(b) for b in buffers or ()])
            assert got.tobytes() == view.tobytes() and got.format == view.format
            assert got.shape == view.shape and got.readonly == view.readonly


def test_a_read_only_buffer_is_copied_unless_it_is_a_whole_buffer_of_ours() -> None:
    a = np.arange(4.0)
    buffers: list[memoryview] = []
    data = oob.dumps(a, buffers)
    body = bytes(buffers[0])  # a message body: read-only memory
    got = oob.loads(data, [memoryview(body)])
    assert got.flags.writeable and np.array_equal(got, a)
    ours = bytearray(buffers[0])  # what a pipe's reader allocated, marked read-only
    got = oob.loads(data, [memoryview(ours).toreadonly()])
    got[0] = 9.0
    assert ours[:8] == np.float64(9.0).tobytes()  # built on it: not copied


def _pipe_pair() -> tuple[int, int]:
    r, w = os.pipe()
    oob.widen(w)
    return r, w


def test_messages_with_big_and_small_buffers_cross_a_pipe() -> None:
    r, w = _pipe_pair()
    big = np.arange(3 << 20, dtype=np.uint8)  # 3 MB: several pipe-fulls
    msgs = [
        ("ready", 1),
        ("run", pickle.PickleBuffer(big), [pickle.PickleBuffer(b"small")], b""),
        ("results", [pickle.PickleBuffer(memoryview(b""))]),
    ]
    writer = threading.Thread(target=lambda: [oob.write_msg(w, m) for m in msgs])
    writer.start()
    try:
        got = [oob.read_msg(r) for _ in msgs]
    finally:
        writer.join()
        os.close(w)
    assert got[0] == ("ready", 1)
    assert bytes(got[1][1]) == big.tobytes() and bytes(got[1][2][0]) == b"small"
    assert bytes(got[2][1][0]) == b""
    assert oob.read_msg(r) is None  # the writer closed its end
    os.close(r)


def test_frame_reader_takes_whole_messages_from_a_non_blocking_pipe() -> None:
    r, w = _pipe_pair()
    os.set_blocking(r, False)
    garbled: list[int] = []
    reader = oob.FrameReader(r, lambda: garbled.append(1))
    sizes = [0, 10, 5 << 20, 3, 1 << 18, 2 << 20, 7]
    payloads = [os.urandom(n) for n in sizes]
    writer = threading.Thread(
        target=lambda: [
            oob.write_msg(w, ("msg", k, [pickle.PickleBuffer(p)])) for k, p in enumerate(payloads)
        ]
    )
    writer.start()
    got: list = []
    import select

    while len(got) < len(payloads):
        select.select([r], [], [], 10)
        msgs = reader.receive()
        assert msgs is not None
        got += msgs
    writer.join()
    assert [m[1] for m in got] == list(range(len(payloads)))
    assert [bytes(m[2][0]) for m in got] == payloads
    os.close(w)
    select.select([r], [], [], 10)
    assert reader.receive() is None and not garbled  # the end of the pipe
    os.close(r)


def test_frame_reader_says_a_garbled_pipe_is_dead() -> None:
    r, w = _pipe_pair()
    os.set_blocking(r, False)
    garbled: list[int] = []
    reader = oob.FrameReader(r, lambda: garbled.append(1))
    os.write(w, oob.HEAD.pack(5, 0) + b"junk!")
    assert reader.receive() is None and garbled == [1]
    os.close(w)
    os.close(r)


def test_a_spill_file_holds_the_pickle_and_its_buffers(tmp_path) -> None:  # noqa: ANN001
    values = _arrays()
    buffers: list[memoryview] = []
    data = oob.dumps(values, buffers)
    ref = spill.write(str(tmp_path), "result", data, buffers)
    blob, bufs = spill.load_parts(ref)
    assert len(bufs) == len(buffers)
    got = oob.loads(blob, bufs)
    assert all(same(a, b) for a, b in zip(values, got))
    assert all(a.flags.writeable for a in got)  # read into one writable buffer
    plain = spill.write(str(tmp_path), "input", b"payload")
    assert b'"parts"' not in plain  # a reference without buffers, as before
    (path,) = [p for p in tmp_path.iterdir() if p.name.startswith("result")]
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    with pytest.raises(spill.SpillError, match="changed after it was spilled"):
        spill.load_parts(ref)
