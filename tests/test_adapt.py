"""The elastic scaler's decision (``launch.adapt.decide``): a pure function, given numbers."""

from __future__ import annotations

import time

import pytest

from sif_magic.launch.adapt import Demand, Job, Policy, decide, lead_time

NOW = 1_000_000.0


def policy(**kw) -> Policy:
    base = dict(min_nodes=0, max_nodes=4, slots_per_node=1, submit_every=10.0, lead=60.0)
    return Policy(**{**base, **kw})


def run(job_id: str, ends: float = 0.0, **kw) -> Job:
    return Job(job_id, "RUNNING", ends=ends, **kw)


def pend(job_id: str, reason: str = "Priority", **kw) -> Job:
    return Job(job_id, "PENDING", reason, **kw)


def test_from_zero_wants_a_node_per_slot_of_work_as_one_array_within_max() -> None:
    d = decide([], Demand(queued=10), policy(max_nodes=2), NOW)
    assert (d.wanted, d.submit, d.array, d.after) == (2, 2, True, "")
    assert any("array of 2" in ln for ln in d.lines)
    # two slots a node: 3 tasks want 2 nodes
    assert decide([], Demand(queued=3), policy(slots_per_node=2), NOW).submit == 2


def test_workers_it_does_not_own_take_their_share_first() -> None:
    # 2 slots of hand-started workers: 5 tasks want 3 more one-slot nodes
    assert decide([], Demand(queued=5, other_slots=2), policy(), NOW).submit == 3
    assert decide([], Demand(queued=1, busy=1, other_slots=2), policy(), NOW).submit == 0


def test_never_beyond_max_nodes() -> None:
    jobs = [run("1"), run("2"), pend("3")]
    d = decide(jobs, Demand(queued=500, busy=2), policy(max_nodes=3), NOW)
    assert d.submit == 0 and d.wanted == 3
    d = decide(jobs[:2], Demand(queued=500, busy=2), policy(max_nodes=3), NOW)
    assert d.submit == 1  # only the room left under MAX


def test_pending_jobs_count_as_capacity_so_nothing_is_asked_twice() -> None:
    d = decide([pend("7"), pend("8")], Demand(queued=2), policy(), NOW)
    assert d.submit == 0
    assert d.lines[0] == "2 job(s) pending (Priority): 2 tasks queued, 0 slots busy"


def test_max_pending_and_the_submit_rate_throttle() -> None:
    d = decide([pend("1")], Demand(queued=100), policy(max_nodes=20, max_pending=3), NOW)
    assert d.submit == 2  # 3 pending at most, one already is
    d = decide([], Demand(queued=100), policy(max_nodes=20), NOW, last_submit=NOW - 2)
    assert d.submit == 0 and any("next submission in 8 s" in ln for ln in d.lines)


def test_arrays_follow_the_site_limit() -> None:
    assert decide([], Demand(queued=9), policy(max_nodes=9, max_array=4), NOW).submit == 4
    d = decide([], Demand(queued=9), policy(max_nodes=9, max_array=0), NOW)
    assert (d.submit, d.array) == (1, False)  # no arrays: one job per submission


def test_a_job_ending_within_the_lead_time_is_replaced_ahead_of_walltime() -> None:
    ends = NOW + 30  # within lead 60
    d = decide([run("5", ends)], Demand(queued=4, busy=1), policy(max_nodes=2), NOW)
    assert d.submit == 1 and d.replaces == ("5",) and d.after == ""
    assert f"job 5 drains at {time.strftime('%H:%M', time.localtime(ends))}" in d.lines
    # at MAX the replacement waits for it (--dependency=afterany), so MAX still holds
    d = decide([run("5", ends)], Demand(queued=4, busy=1), policy(max_nodes=1), NOW)
    assert (d.submit, d.after, d.replaces) == (1, "5", ("5",))
    # once replaced, nothing more; the table says by what
    jobs = [run("5", ends), run("6", replaces="5")]
    d = decide(jobs, Demand(queued=0, busy=1), policy(max_nodes=2), NOW)
    assert d.submit == 0
    assert any(ln.endswith("replacement 6 running") for ln in d.lines)
    # far from walltime: no replacement
    assert decide([run("5", NOW + 3600)], Demand(busy=1), policy(), NOW).submit == 0


def test_min_is_held_and_scale_in_is_left_to_idle_timeouts() -> None:
    jobs = [run("1", NOW + 600), run("2", NOW + 7200)]
    d = decide(jobs, Demand(), policy(min_nodes=1), NOW)
    assert d.submit == 0 and d.withdraw == () and d.hold == ("2",)  # the one that lasts longest
    assert any("idle timeout" in ln for ln in d.lines)
    assert decide([], Demand(), policy(min_nodes=1), NOW).submit == 1


def test_no_node_for_a_backlog_that_clears_before_one_could_start() -> None:
    d = decide([run("1")], Demand(queued=20, busy=1, rate=10.0), policy(), NOW)
    assert d.submit == 0  # 2 s of backlog, 60 s to start a node
    d = decide([run("1")], Demand(queued=20, busy=1, rate=0.1), policy(), NOW)
    assert d.submit == 3


def test_pending_jobs_no_longer_wanted_are_withdrawn_after_a_while() -> None:
    jobs = [run("1"), pend("2"), pend("3")]
    assert decide(jobs, Demand(busy=1, low_for=5), policy(), NOW).withdraw == ()
    d = decide(jobs, Demand(busy=1, low_for=120), policy(), NOW)
    assert d.withdraw == ("3", "2")  # newest first; the running one is never cancelled


def test_lead_time_and_policy_checks() -> None:
    assert lead_time([], []) == 60.0
    assert lead_time([3.0, 12.0], [4.0]) == 12.0 + 4.0 + 5.0
    with pytest.raises(ValueError, match="MIN <= MAX"):
        policy(min_nodes=3, max_nodes=2).check()


def test_the_workers_table_shows_what_the_scaler_decided(monkeypatch) -> None:
    from sif_magic.display.html import workers_html
    from sif_magic.display.text import worker_line
    from sif_magic.launch import scaler, slurm_rows

    d = decide([pend("7"), pend("8")], Demand(queued=100, busy=4, calls=800), policy(), NOW)
    assert d.lines[0] == "2 job(s) pending (Priority): 800 calls queued, 4 slots busy"
    row = {
        "worker": "scaler s",
        "scaler": "--adapt 0:4",
        "runtime": "r",
        "state": "; ".join(d.lines),
    }

    class Backend:  # what workers_table asks of a backend
        runtime = "r"

        def workers(self) -> list:
            return []

    class Scaler:
        def row(self) -> dict:
            return row

    monkeypatch.setitem(scaler.ACTIVE, "r", Scaler())
    monkeypatch.setattr(slurm_rows.PENDING, "rows", lambda runtime, joined: [])
    assert slurm_rows.workers_table(Backend()) == [row]
    html = workers_html([row], now=NOW)
    assert "scaler --adapt 0:4: 2 job(s) pending (Priority): 800 calls queued, 4 slots busy" in html
    assert worker_line(row).startswith("scaler --adapt 0:4 (runtime r): 2 job(s) pending")


def test_the_magic_says_what_to_write(ip, broker_url, runtime, capsys) -> None:
    from IPython.core.error import UsageError

    ip.run_line_magic("sif_config", f"backend=rabbitmq amqp_url={broker_url} runtime={runtime}")
    for line, says in (
        ("--adapt 3", "write MIN:MAX, e.g. --adapt 0:4"),
        ("--adapt 3:2", "need 0 <= MIN <= MAX"),
        ("--adapt 0:2 --nodes 2", "leave out --nodes"),
        ("--adapt 0:2 --idle-timeout 0", "--idle-timeout above 0"),
        ("--adapt 0:2 --max-pending 0", "--max-pending must be 1 or more"),
        ("--adapt 0:2 --amqp-url-file /nonexistent/url", "/nonexistent/url"),
    ):
        with pytest.raises(UsageError, match=says):
            ip.run_line_magic("sif_workers", f"slurm --container none {line}")
    ip.run_line_magic("sif_workers", "slurm --adapt off")
    assert f"no scaler runs for runtime {runtime}" in capsys.readouterr().out
