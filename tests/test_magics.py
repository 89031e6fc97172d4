"""The magics, driven through a real IPython shell."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from procs import process_gone

from sif_magic import RemoteError


def run(ip, cell: str):
    result = ip.run_cell(cell)
    return result


def test_function_form_maps_the_last_function(ip) -> None:
    ip.user_ns["xs"] = list(range(6))
    r = run(
        ip,
        "%%sifmap xs -o ys\ndef helper(v):\n    return v + 100\ndef work(x):\n    print('processing', x)\n    return helper(x) * 2\n",
    )
    assert r.error_in_exec is None
    assert ip.user_ns["ys"] == [(x + 100) * 2 for x in range(6)]
    job = ip.user_ns["_sif_job"]
    assert job.output(4) == "processing 4\n"
    assert callable(ip.user_ns["work"])  # the cell's functions exist in the notebook too


def test_function_form_with_named_function(ip) -> None:
    r = run(
        ip,
        "%%sifmap range(3) -f first -o out\ndef first(x):\n    return -x\ndef second(x):\n    return x\n",
    )
    assert r.error_in_exec is None and ip.user_ns["out"] == [0, -1, -2]


def test_body_form_returns_the_last_expression(ip) -> None:
    ip.user_ns["scale"] = 10
    r = run(
        ip,
        "%%sifmap a, b in zip(range(-3, 3), 'abcdef') -o zs --chunksize 2\ns = f'{a}{b}'\ns * (scale // 5)\n",
    )
    assert r.error_in_exec is None
    assert ip.user_ns["zs"] == [f"{a}{b}" * 2 for a, b in zip(range(-3, 3), "abcdef")]


def test_body_form_without_final_expression_gives_none(ip) -> None:
    r = run(ip, "%%sifmap x in [1, 2] -o nones\ny = x + 1\n")
    assert r.error_in_exec is None and ip.user_ns["nones"] == [None, None]


def test_line_magic(ip) -> None:
    ip.run_line_magic("sifmap", "abs [-1, -2, 3] -o q")
    assert ip.user_ns["q"] == [1, 2, 3]


def test_result_without_out_is_the_cell_value(ip) -> None:
    r = run(ip, "%%sifmap x in range(3)\nx * x\n")
    assert r.result == [0, 1, 4]


def test_remote_error_raises_with_the_cell_source_line(ip, capsys) -> None:
    r = run(ip, "%%sifmap x in range(5) -o ws\nif x == 3:\n    raise KeyError('three')\nx\n")
    assert isinstance(r.error_in_exec, RemoteError)
    err = r.error_in_exec
    assert err.ename == "KeyError" and err.index == 3
    assert any("raise KeyError('three')" in (f[3] or "") for f in err.frames)
    # successes stay reachable, the failure in place
    ws = ip.user_ns["ws"]
    assert ws[:3] == [0, 1, 2] and ws[4] == 4 and isinstance(ws[3], RemoteError)


def test_errors_collect(ip) -> None:
    r = run(ip, "%%sifmap x in [1, 0] -o inv --errors collect\n1 / x\n")
    assert r.error_in_exec is None
    assert ip.user_ns["inv"][0] == 1.0 and isinstance(ip.user_ns["inv"][1], RemoteError)


def test_no_wait_returns_the_live_job(ip) -> None:
    r = run(ip, "%%sifmap x in range(4) -o job --no-wait\nimport time\ntime.sleep(0.2)\nx\n")
    assert r.error_in_exec is None
    job = ip.user_ns["job"]
    assert not job.done()
    assert job.results(timeout=30) == [0, 1, 2, 3]


def test_options_reach_the_calls(ip) -> None:
    r = run(
        ip,
        "%%sifmap k in ['SIFV'] -o envs --env SIFV=42 --timeout 30 --retries 1\nimport os\nos.environ.get(k)\n",
    )
    assert r.error_in_exec is None and ip.user_ns["envs"] == ["42"]


@pytest.mark.parametrize(
    "cell,message",
    [
        ("%%sifmap -o ys\ndef f(x):\n    return x\n", "needs"),
        ("%%sifmap 5 -o ys\ndef f(x):\n    return x\n", "not iterable"),
        ("%%sifmap undefined_name -o ys\ndef f(x):\n    return x\n", "could not evaluate"),
        ("%%sifmap range(2) -o ys\nx = 1\n", "defines no function"),
        ("%%sifmap x in range(2) --bogus\nx\n", "unrecognized"),
        ("%%sifmap x in range(2) --env NOEQUALS\nx\n", "K=V"),
    ],
)
def test_user_mistakes_are_usage_errors(ip, cell: str, message: str, capsys) -> None:
    r = run(ip, cell)
    assert r.error_in_exec is not None or r.error_before_exec is not None
    out = capsys.readouterr()
    assert message in out.out + out.err + str(r.error_in_exec)


def test_sif_config_sets_and_masks_secrets(ip, capsys) -> None:
    ip.run_line_magic(
        "sif_config", "amqp_url=amqp://alice:s3cret@broker:5672/lab runtime=ml key=topsecret"
    )
    ip.run_line_magic("sif_config", "")
    out = capsys.readouterr().out
    assert "amqp://alice:***@broker:5672/lab" in out and "s3cret" not in out
    assert "topsecret" not in out and "ml" in out


def test_sif_config_refuses_bad_values(ip, capsys) -> None:
    run(ip, "%sif_config nosuch=1")
    run(ip, "%sif_config amqp_url=http://x:pw@y")
    out = capsys.readouterr()
    text = out.out + out.err
    assert (
        "unknown setting 'nosuch'" in text
        and "must start with amqp://" in text
        and "pw@" not in text
    )


def test_interrupt_cancels_the_run(ip, tmp_path) -> None:
    ip.user_ns["d"] = str(tmp_path)
    main = threading.main_thread()

    def interrupt() -> None:
        deadline = time.time() + 20
        while len(list(tmp_path.glob("pid*"))) < 2 and time.time() < deadline:
            time.sleep(0.05)
        signal.pthread_kill(main.ident, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    t0 = time.time()
    run(
        ip,
        "%%sifmap x in range(6) -o never --chunksize 1\nimport os, time\nopen(f'{d}/pid{x}', 'w').write(str(os.getpid()))\ntime.sleep(60)\n",
    )
    assert time.time() - t0 < 20
    job = ip.user_ns["_sif_job"]
    assert job.done() and job.state_counts()["cancelled"] == 6
    for p in tmp_path.glob("pid*"):
        assert process_gone(int(p.read_text()))
    assert "never" not in ip.user_ns


def test_sif_logs_prints_a_call(ip, capsys) -> None:
    run(ip, "%%sifmap x in range(3)\nprint('log line', x)\nx\n")
    capsys.readouterr()
    ip.run_line_magic("sif_logs", "2")
    assert "log line 2" in capsys.readouterr().out


def test_resume_reuses_kept_results_and_sif_cache_shows_and_clears_them(
    ip, tmp_path, capsys
) -> None:
    ip.run_line_magic("sif_config", f"cache_dir={tmp_path / 'cache'}")
    cell = "%%sifmap range(8) -o ys --resume\ndef sq(x):\n    return x * x\n"
    assert run(ip, cell).error_in_exec is None and ip.user_ns["_sif_job"].reused == 0
    assert run(ip, cell).error_in_exec is None and ip.user_ns["_sif_job"].reused == 8
    assert ip.user_ns["ys"] == [x * x for x in range(8)]
    capsys.readouterr()
    ip.run_line_magic("sif_cache", "")
    assert "8 result(s) of 1 function(s)" in capsys.readouterr().out
    ip.run_line_magic("sif_cache", "clear")
    assert "removed" in capsys.readouterr().out
    assert run(ip, cell).error_in_exec is None and ip.user_ns["_sif_job"].reused == 0
