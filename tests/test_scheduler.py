"""Scheduling policy (runner/scheduler.py), the cancel set and the version check:
pure decisions, tested without processes, threads or a broker."""

from __future__ import annotations

import pytest

from sif_magic.runner.cancels import CancelSet
from sif_magic.runner.scheduler import (
    PREFETCH_BELOW,
    PREFETCH_MAX,
    CallTimes,
    Prefetch,
    auto_chunksize,
    send_ahead,
    should_retry,
    split_share,
)
from sif_magic.runner.versions import incompatibility


@pytest.mark.parametrize(
    ("n", "slots", "size"),
    [
        (0, 4, 1),
        (1, 4, 1),
        (100, 2, 13),  # about four chunks per slot: ceil(100 / 8)
        (100_000, 2, 2000),  # at most 2,000 calls a chunk
        (10, 0, 3),  # no slot known: as if one
        (7, 100, 1),
    ],
)
def test_auto_chunksize(n: int, slots: int, size: int) -> None:
    assert auto_chunksize(n, slots) == size


def test_auto_chunksize_gives_every_slot_about_four_chunks_below_the_cap() -> None:
    for n in (1000, 5000, 7999):
        for slots in (1, 2, 8):
            chunks = -(-n // auto_chunksize(n, slots))
            assert 4 * slots - 1 <= chunks <= 4 * slots


def test_send_ahead_only_quick_pieces_that_fit_in_the_pipe() -> None:
    room = 32 * 1024
    assert send_ahead(10, 1e-5, 1000, room)  # 0.1 ms of work, 1 kB
    assert not send_ahead(10, PREFETCH_BELOW / 10, 1000, room)  # exactly the limit: not ahead
    assert not send_ahead(1, 1.0, 1000, room)  # a slow call waits for an idle slot
    assert not send_ahead(10, 1e-5, room, room)  # would block in the request pipe


def test_split_share_halves_work_worth_the_trip_and_nothing_else() -> None:
    assert split_share(100, 0.005, 1000, 1) == 500  # 0.5 s of calls: half to the idle slot
    assert split_share(100, 0.005, 1000, 3) == 750  # three idle slots: a quarter each
    assert split_share(1, 0.005, 1000, 1) == 500  # one slow call: it goes (rounded up)
    assert split_share(2000, 0.5e-6, 1000, 1) == 0  # 1 ms of quick calls: not worth it
    assert split_share(0, 1.0, 1000, 1) == split_share(10, 1.0, 1000, 0) == 0
    # quick calls stuck behind one that has run for a while go anyway
    assert split_share(2000, 0.5e-6, 1000, 1, running_for=0.05) == 500
    # inputs are sent again: 40 MB of arrays need more work behind them
    assert split_share(5, 0.01, 40 << 20, 1) == 0
    assert split_share(50, 0.01, 40 << 20, 1) == 500


def test_should_retry_counts_attempts_from_the_chunks_first() -> None:
    assert not should_retry(1, 1, 0)
    assert should_retry(1, 1, 2) and should_retry(2, 1, 2) and not should_retry(3, 1, 2)
    # a redelivered chunk starts at attempt 3: its retries count from there
    assert should_retry(3, 3, 1) and not should_retry(4, 3, 1)


def test_call_times_unknown_is_slow_and_the_table_starts_again_when_full() -> None:
    t = CallTimes()
    assert t.get("f") == CallTimes.UNKNOWN == 1.0
    t.note("f", 2e-5)
    assert t.get("f") == 2e-5
    for k in range(CallTimes.KEEP):
        t.note(f"g{k}", 0.5)
    assert t.get("f") == 2e-5  # KEEP + 1 functions known
    t.note("new", 0.1)
    assert t.get("new") == 0.1 and t.get("f") == CallTimes.UNKNOWN


def test_prefetch_grows_for_quick_chunks_and_shrinks_back_for_slow_ones() -> None:
    p = Prefetch(processes=2)
    assert p.current == p.base == 4  # a running chunk and one ready per process
    first = [p.chunk_done(2e-5) for _ in range(Prefetch.EVERY - 1)]
    assert first == [0] * (Prefetch.EVERY - 1)  # decides once per EVERY chunks
    changes = [c for c in (p.chunk_done(2e-5) for _ in range(64)) if c]
    assert changes and changes[-1] == PREFETCH_MAX == p.current
    changes = [c for c in (p.chunk_done(0.5) for _ in range(200)) if c]
    assert changes and changes[-1] == 4 == p.current


def test_prefetch_ignores_small_changes() -> None:
    p = Prefetch(processes=2)
    # ~1 s chunks: the wanted value is the base, already current: no round trip
    assert [p.chunk_done(1.0) for _ in range(3 * Prefetch.EVERY)] == [0] * 3 * Prefetch.EVERY


def test_cancel_set_forgets_after_its_time() -> None:
    now = [1000.0]
    cancels = CancelSet(keep=3600, clock=lambda: now[0])
    cancels.add("j1")
    assert "j1" in cancels and "j2" not in cancels
    now[0] += 3000
    cancels.add("j2")
    now[0] += 601
    assert "j1" not in cancels and "j2" in cancels
    cancels.add("j3")  # adding drops what expired
    assert list(cancels._since) == ["j2", "j3"]


def test_incompatibility_names_both_versions_and_the_fix() -> None:
    assert incompatibility(("3.11", "3.0.0"), ("3.11", "3.1.2")) == ""
    assert incompatibility(("", ""), ("3.12", "2.2.1")) == ""  # unknown: no reason
    why = incompatibility(("3.11", "3.0.0"), ("3.12", "3.0.0"))
    assert "Python 3.11" in why and "Python 3.12" in why
    assert "sif-magic runtime def --python 3.11" in why and "cloudpickle==3.0.0" in why
    why = incompatibility(("3.11", "3.0.0"), ("3.11", "2.2.1"))
    assert "cloudpickle 3.0.0" in why and "2.2.1" in why and "--python 3.11" in why
