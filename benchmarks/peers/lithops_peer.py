"""Lithops with its localhost backend and localhost storage (offline, 2 worker processes).

s1: ``fexec.map(inc, range(n))`` then ``fexec.get_result()``: one invocation per call.
It runs at about 2 calls/s here, so it gets few calls (``n1_lithops``, default 40).
Its temporary files go to a private TMPDIR, removed afterwards; the background
data cleaner is off.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from . import _common
from ._common import PY, Context

TOOL = "Lithops (localhost)"


def run(ctx: Context) -> None:
    if not ctx.want("s1"):
        return
    tmp = ctx.workdir / "tmp"
    tmp.mkdir()
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)
    n = ctx.params.get("n1_lithops", 40)
    with ctx.attempt("s1", TOOL):
        import lithops

        from ._funcs import inc

        _common.ship_by_value()
        config = {
            "lithops": {
                "backend": "localhost",
                "storage": "localhost",
                "log_level": "WARNING",
                "data_cleaner": False,
            },
            "localhost": {"worker_processes": 2, "runtime": PY},
        }
        fexec = lithops.FunctionExecutor(config=config)
        try:

            def once(count: int) -> float:
                t0 = time.perf_counter()
                futures = fexec.map(inc, range(count))
                values = fexec.get_result(futures, timeout=240, show_progressbar=False)
                dt = time.perf_counter() - t0
                if sum(values) != sum(range(count)) + count:
                    raise RuntimeError("wrong results")
                return dt

            once(2)  # warm: runtime metadata, the localhost runner
            ctx.procs.note_descendants()
            dt = once(n)
            ctx.throughput(
                "s1", TOOL, n, dt, setup="localhost backend and storage, 2 worker processes"
            )
        finally:
            ctx.procs.note_descendants()
            cleaner = getattr(lithops.FunctionExecutor, "_cleaner_process", None)
            ctx.procs.adopt(getattr(cleaner, "pid", None))
            try:
                fexec.compute_handler.clear()
            except Exception:  # noqa: BLE001
                pass


if __name__ == "__main__":
    sys.exit(_common.run_main(run))
