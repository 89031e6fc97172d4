"""What a live job widget costs: iopub messages, kernel memory and speed of a big run.

Starts a real python3 kernel (jupyter_client's KernelManager), runs a
``%%sifmap`` of 100,000 calls on the local backend in it with the widget live,
and records every iopub message the kernel sends meanwhile (type, kernel-side
time stamp, size). Then the same in a fresh kernel with ``SIF_MAGIC_WIDGETS=0``.

Reported per mode: wall time and calls/s of the run cell; iopub messages per
second (mean over the run, peak over any 1 s window) and bytes per second;
the messages by type (and the widget messages by widget model); the kernel's
RSS before and after the run and its peak meanwhile (sampled from
/proc/<pid>/status). The issue's budget: at most ~50 iopub messages/s in
total, and the run adds < 150 MB to the kernel. A benchmark, not a test: it
reports and asserts nothing about times.

    .venv/bin/python benchmarks/widget_load.py [--calls 100000] [--print-every 1]
        [--line-chars 0] [--sleep 0] [--processes 0] [--modes on,off] [--out PATH]

Writes benchmarks/results/widget_load.json. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "widget_load.json"
BUDGET_MSGS_PER_S = 50
BUDGET_RSS_MB = 150


# -- the kernel and what it sends ------------------------------------------------------


class Kernel:
    """A python3 kernel whose iopub messages are all recorded by a reader thread."""

    def __init__(self, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        from jupyter_client.manager import KernelManager

        self.log_path = log_path
        self._log = open(log_path, "wb")  # the kernel's own stdout/stderr
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env, cwd=str(cwd), stdout=self._log, stderr=self._log)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.messages: list[dict[str, Any]] = []  # t, type, size, parent, comm, model
        self._lock = threading.Lock()
        self._idle: dict[str, threading.Event] = {}
        self._idled: set[str] = set()
        self._texts: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="iopub-reader", daemon=True)
        self._reader.start()
        self.pid = int(self.run("import os; print(os.getpid())")["stdout"].strip())

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            except Exception:  # noqa: BLE001 - channels closed at shutdown
                if self._stop.is_set():
                    return
                continue
            self._record(msg)

    def _record(self, msg: dict[str, Any]) -> None:
        content = msg.get("content", {})
        kind = msg["header"]["msg_type"]
        date = msg["header"].get("date")
        t = date.timestamp() if hasattr(date, "timestamp") else time.time()
        size = len(json.dumps(content, default=str)) + sum(
            memoryview(b).nbytes for b in msg.get("buffers") or []
        )
        entry: dict[str, Any] = {
            "t": t,
            "type": kind,
            "size": size,
            "parent": (msg.get("parent_header") or {}).get("msg_id", ""),
            "comm": content.get("comm_id", ""),
        }
        if kind == "comm_open":
            state = (content.get("data") or {}).get("state") or {}
            entry["model"] = state.get("_model_name", "?")
        with self._lock:
            self.messages.append(entry)
            if kind == "stream":
                self._texts.setdefault(entry["parent"], []).append(content.get("text", ""))
            if kind == "status" and content.get("execution_state") == "idle":
                self._idled.add(entry["parent"])
                event = self._idle.get(entry["parent"])
                if event is not None:
                    event.set()

    def run(self, code: str, timeout: float = 600) -> dict[str, Any]:
        """Execute ``code``; returns times (local clock), stdout and the reply status."""
        event = threading.Event()
        t_send = time.time()
        msg_id = self.kc.execute(code, store_history=False)
        with self._lock:
            self._idle[msg_id] = event
            if msg_id in self._idled:
                event.set()
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        t_reply = time.time()
        if not event.wait(timeout):
            raise TimeoutError(f"no idle status after {code[:60]!r}")
        with self._lock:
            idle = [
                m["t"] for m in self.messages if m["parent"] == msg_id and m["type"] == "status"
            ]
            stdout = "".join(self._texts.get(msg_id, []))
        if reply["content"]["status"] != "ok":
            raise RuntimeError(
                f"cell failed: {reply['content'].get('ename')}: {reply['content'].get('evalue')}\n{code}"
            )
        return {
            "t_send": t_send,
            "t_reply": t_reply,
            "t_idle_kernel": max(idle) if idle else t_reply,
            "msg_id": msg_id,
            "stdout": stdout,
        }

    def shutdown(self) -> None:
        kids = _descendants(self.pid)
        try:
            self.km.shutdown_kernel(now=False)
        except Exception:  # noqa: BLE001
            self.km.shutdown_kernel(now=True)
        self._stop.set()
        self.kc.stop_channels()
        self._reader.join(2)
        deadline = time.monotonic() + 5
        while kids and time.monotonic() < deadline:  # the pool's slot processes
            kids = [p for p in kids if _alive(p)]
            time.sleep(0.1)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(line for line in text[-lines:] if "without encryption" not in line)


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        todo += kids
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of ``pid`` in MB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


class _RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.peak = max(self.peak, _rss(self.pid)["VmRSS"])
            except OSError:
                return

    def stop(self) -> float:
        self.stopped.set()
        self.join(2)
        return self.peak


# -- one mode ----------------------------------------------------------------------


def _cell(calls: int, print_every: int, sleep: float, line_chars: int) -> str:
    body = ["%%sifmap x in range(" + str(calls) + ") -o ys"]
    if sleep:
        body += ["import time", f"time.sleep({sleep})"]
    line = "print('processing', x)"
    if line_chars:
        line = f"print(f'processing {{x}} '.ljust({line_chars}, '.'))"
    if print_every == 1:
        body.append(line)
    elif print_every > 1:
        body += [f"if x % {print_every} == 0:", f"    {line}"]
    body.append("x * x")
    return "\n".join(body)


def measure(mode: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    widgets = mode == "on"
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        SIF_MAGIC_HOME=str(work / f"home-{mode}"),
        SIF_MAGIC_WIDGETS="1" if widgets else "0",
        IPYTHONDIR=str(work / f"ipython-{mode}"),
    )
    for var in ("SIF_MAGIC_BACKEND", "SIF_MAGIC_AMQP_URL", "SIF_MAGIC_PROCESSES"):
        env.pop(var, None)
    (work / f"home-{mode}").mkdir(exist_ok=True)
    kernel = Kernel(env, work, work / f"kernel-{mode}.log")
    try:
        setup = ["%load_ext sif_magic", "%sif_config backend=local"]
        if args.processes:
            setup.append(f"%sif_config processes={args.processes}")
        # import what a widget run imports, and start the pool, outside the measured cell
        setup.append("import ipywidgets, sif_magic.widgets, sif_magic.display")
        kernel.run("\n".join(setup))
        kernel.run("%%sifmap x in range(200) -o _warm\nx")
        info = json.loads(
            kernel.run(
                "import json, ipykernel, ipywidgets, sif_magic\n"
                "print(json.dumps({'ipykernel': ipykernel.__version__, "
                "'ipywidgets': ipywidgets.__version__, 'sif_magic': sif_magic.__version__, "
                "'processes': _sif_job.backend.slots(), "
                "'widgets_enabled': sif_magic.display.widgets_enabled()}))"
            )["stdout"]
        )
        kernel.run("import gc; gc.collect()")
        time.sleep(0.5)
        before = _rss(kernel.pid)
        n_before = len(kernel.messages)
        sampler = _RssSampler(kernel.pid)
        sampler.start()
        print(f"  [{mode}] running {args.calls:,} calls ...", flush=True)
        ran = kernel.run(
            _cell(args.calls, args.print_every, args.sleep, args.line_chars), timeout=3600
        )
        peak = sampler.stop()
        after = _rss(kernel.pid)
        time.sleep(2.0)  # what the kernel sends right after the cell (late pushes)
        job = json.loads(
            kernel.run(
                "import json\n"
                "print(json.dumps({'elapsed': _sif_job.elapsed, 'counts': _sif_job.state_counts(), "
                "'results': len(ys)}))"
            )["stdout"]
        )
        after_gc = _rss(kernel.pid)
    except Exception:
        print(f"kernel log ({mode}):\n{kernel.log_tail()}", file=sys.stderr)
        raise
    finally:
        kernel.shutdown()

    run_msgs = kernel.messages[n_before:]
    t0, t1 = ran["t_send"], ran["t_idle_kernel"]
    window = [m for m in run_msgs if t0 - 0.5 <= m["t"] <= t1]
    tail = [m for m in run_msgs if t1 < m["t"] <= t1 + 2.0]
    wall = ran["t_reply"] - ran["t_send"]
    models = {m["comm"]: m["model"] for m in kernel.messages if m["type"] == "comm_open"}
    return {
        "mode": "widgets on" if widgets else "widgets off",
        "versions": info,
        "calls": args.calls,
        "wall_s": round(wall, 3),
        "job_elapsed_s": round(job["elapsed"], 3),
        "calls_per_s": round(args.calls / wall, 1),
        "counts": job["counts"],
        "iopub": _rates(window, max(wall, 1e-9)),
        "iopub_by_type": dict(Counter(m["type"] for m in window).most_common()),
        "comm_msg_by_model": dict(
            Counter(
                models.get(m["comm"], "?") for m in window if m["type"] == "comm_msg"
            ).most_common()
        ),
        "iopub_after_idle_2s": dict(Counter(m["type"] for m in tail).most_common()),
        "per_second": _per_second(window, t0),
        "rss_mb": {
            "before": round(before["VmRSS"], 1),
            "after": round(after["VmRSS"], 1),
            "after_gc_and_results_read": round(after_gc["VmRSS"], 1),
            "added": round(after["VmRSS"] - before["VmRSS"], 1),
            "peak_sampled": round(max(peak, after["VmRSS"]), 1),
            "peak_added": round(max(peak, after["VmRSS"]) - before["VmRSS"], 1),
            "hwm": round(after["VmHWM"], 1),
        },
    }


# Jupyter's server leaves these out of its iopub rate limit (ZMQChannelsWebsocketConnection).
NOT_RATE_LIMITED = {"status", "comm_open", "execute_input"}


def _peak_count(times: list[float]) -> int:
    """Most messages in any 1 s window [t, t + 1 s) that starts at a message."""
    times = sorted(times)
    peak = j = 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + 1.0:
            j += 1
        peak = max(peak, j - i)
    return peak


def _rates(msgs: list[dict[str, Any]], duration: float) -> dict[str, float]:
    peak = _peak_count([m["t"] for m in msgs])
    limited = [m["t"] for m in msgs if m["type"] not in NOT_RATE_LIMITED]
    by_time = sorted(msgs, key=lambda m: m["t"])
    peak_bytes = 0
    lo = total = 0
    for m in by_time:
        total += m["size"]
        while by_time[lo]["t"] < m["t"] - 1.0:
            total -= by_time[lo]["size"]
            lo += 1
        peak_bytes = max(peak_bytes, total)
    size = sum(m["size"] for m in msgs)
    return {
        "messages": len(msgs),
        "per_s_mean": round(len(msgs) / duration, 1),
        "per_s_peak_1s": peak,
        # without the one-off widget creation (comm_open) and status messages
        "per_s_peak_1s_rate_limited_types": _peak_count(limited),
        "per_s_mean_rate_limited_types": round(len(limited) / duration, 1),
        "bytes": size,
        "kb_per_s_mean": round(size / duration / 1024, 1),
        "kb_per_s_peak_1s": round(peak_bytes / 1024, 1),
    }


def _per_second(msgs: list[dict[str, Any]], t0: float) -> list[int]:
    if not msgs:
        return []
    bins = Counter(int(max(0.0, m["t"] - t0)) for m in msgs)
    return [bins.get(i, 0) for i in range(max(bins) + 1)]


# -- report ------------------------------------------------------------------------


def _table(results: list[dict[str, Any]]) -> str:
    rows = [
        ("wall time of the cell (s)", lambda r: f"{r['wall_s']:.2f}"),
        ("calls/s", lambda r: f"{r['calls_per_s']:,.0f}"),
        ("iopub messages in the run", lambda r: f"{r['iopub']['messages']:,}"),
        ("iopub msgs/s, mean", lambda r: f"{r['iopub']['per_s_mean']:.1f}"),
        ("iopub msgs/s, peak 1 s", lambda r: f"{r['iopub']['per_s_peak_1s']}"),
        (
            "  peak 1 s, types the server limits",
            lambda r: f"{r['iopub']['per_s_peak_1s_rate_limited_types']}",
        ),
        ("iopub KB/s, mean", lambda r: f"{r['iopub']['kb_per_s_mean']:.1f}"),
        ("iopub KB/s, peak 1 s", lambda r: f"{r['iopub']['kb_per_s_peak_1s']:.1f}"),
        ("kernel RSS before (MB)", lambda r: f"{r['rss_mb']['before']:.1f}"),
        ("kernel RSS after (MB)", lambda r: f"{r['rss_mb']['after']:.1f}"),
        ("RSS added by the run (MB)", lambda r: f"{r['rss_mb']['added']:.1f}"),
        ("RSS peak added, sampled (MB)", lambda r: f"{r['rss_mb']['peak_added']:.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    head = f"{'':<{width}}  " + "  ".join(f"{r['mode']:>12}" for r in results)
    lines = [head]
    for name, fmt in rows:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{fmt(r):>12}" for r in results))
    for r in results:
        lines.append(f"{r['mode']}: by type {r['iopub_by_type']}")
        if r["comm_msg_by_model"]:
            lines.append(f"{r['mode']}: comm_msg by widget {r['comm_msg_by_model']}")
        lines.append(f"{r['mode']}: messages per second of the run {r['per_second']}")
        if r["iopub_after_idle_2s"]:
            lines.append(f"{r['mode']}: in the 2 s after idle {r['iopub_after_idle_2s']}")
    return "\n".join(lines)


def _verdicts(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        if r["mode"] != "widgets on":
            continue
        peak, added = r["iopub"]["per_s_peak_1s"], r["rss_mb"]["peak_added"]
        out.append(
            f"budget, iopub <= ~{BUDGET_MSGS_PER_S} msgs/s: peak {peak}/s "
            + ("within" if peak <= BUDGET_MSGS_PER_S else "OVER")
        )
        out.append(
            f"budget, run adds < {BUDGET_RSS_MB} MB: peak +{added:.1f} MB "
            + ("within" if added < BUDGET_RSS_MB else "OVER")
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument(
        "--print-every", type=int, default=1, help="a call prints a line every N calls (0: never)"
    )
    parser.add_argument(
        "--line-chars", type=int, default=0, help="pad each printed line to N characters"
    )
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds each call sleeps")
    parser.add_argument("--processes", type=int, default=0, help="local processes (0: CPUs)")
    parser.add_argument("--modes", default="on,off", help="on, off or on,off")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not Path("/proc/self/status").exists():
        print("widget_load needs Linux (/proc)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="sif-widget-load-"))
    results = []
    try:
        print(
            f"widget_load: {args.calls:,} calls on the local backend, print every "
            f"{args.print_every} ({args.line_chars or 'short'} chars), sleep {args.sleep} s, "
            "in a real kernel",
            flush=True,
        )
        for mode in args.modes.split(","):
            results.append(measure(mode.strip(), args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(_table(results))
    for line in _verdicts(results):
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "widget_load",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": {k: str(v) for k, v in vars(args).items()},
        "budget": {"iopub_msgs_per_s": BUDGET_MSGS_PER_S, "rss_added_mb": BUDGET_RSS_MB},
        "results": results,
    }
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
