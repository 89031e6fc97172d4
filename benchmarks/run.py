"""sif_magic against its peers, side by side: one command.

    bash benchmarks/setup_env.sh && benchmarks/.venv/bin/python benchmarks/run.py

Runs every scenario of issue 6 for sif_magic and its peers (bare pika, Celery,
Dask distributed, ipyparallel, Lithops localhost, ProcessPoolExecutor), each
runner in a fresh process, ``--repeats`` rounds (the order of the tools
rotates every round), then prints a table of medians, min-max and ratios
against sif_magic, and writes ``benchmarks/results/latest.json`` and
``latest.png``. Every process a runner starts is stopped by pid; what a runner
left behind is stopped by pid here too. Needs RabbitMQ on 127.0.0.1:5672.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.peers import _common  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RABBIT = "sif_magic (rabbitmq)"
LOCAL = "sif_magic (local)"
RABBIT_BROKER = "sif_magic (rabbitmq, arrays through the broker)"  # s9, spill_arrays_mb=0
ELASTIC = "sif_magic (elastic SLURM)"
ELASTIC_IDLE = 10.0  # the workers' --idle-timeout in e1-e2

SCENARIOS = {
    "s1": "1. one message per call (3,000 x f(x)=x+1, 2 processes)",
    "s2": "2. automatic chunking, 100,000 calls",
    "s3": "3. 200 x sleep(10 ms) on 2 processes (ideal 1.0 s)",
    "s4": "4. time to first result, one-call run, warm workers (median of 30)",
    "s5": "5. client memory added by a run, results held",
    "s6": "6. monitoring on vs off (rabbitmq)",
    "s7": "7. local backend vs ProcessPoolExecutor, same chunk size",
    "e1": "e1. elastic SLURM (--adapt 0:2): zero workers to the first result",
    "e2": "e2. elastic SLURM: seconds a node stays allocated after the last call (worst node)",
    "e3": "e3. elastic SLURM (--adapt 1:1 --time 1 min): calls rerun because of walltime",
    "s8": "8. skewed work: 1,000 calls of lognormal durations, 2 processes (share of the ideal)",
    "s9": "9. big arrays: 40 NumPy arrays of 8 MB in and out, 2 processes (MB/s in + out)",
}


@dataclass
class Runner:
    name: str
    module: str
    scenarios: list[str]
    timeout: float


RUNNERS = [
    Runner(
        "sif_magic",
        "benchmarks.peers.sifmagic",
        ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"],
        900,
    ),
    Runner("pika", "benchmarks.peers.pika_rt", ["s1", "s9"], 300),
    Runner("celery", "benchmarks.peers.celery_peer", ["s1"], 240),
    Runner("dask", "benchmarks.peers.dask_peer", ["s1"], 240),
    Runner("ipyparallel", "benchmarks.peers.ipp_peer", ["s1"], 300),
    Runner("lithops", "benchmarks.peers.lithops_peer", ["s1"], 300),
    Runner("processpool", "benchmarks.peers.processpool", ["s7", "s8", "s9"], 240),
    # its own one-node SLURM cluster (tests/slurm_cluster.py); an error where SLURM is missing
    Runner("elastic", "benchmarks.peers.elastic", ["e1", "e2", "e3"], 900),
    # memory: a fresh client process per measurement
    Runner("dask-memory", "benchmarks.peers.dask_peer", ["s5"], 300),
    Runner("ipyparallel-memory", "benchmarks.peers.ipp_peer", ["s5"], 420),
]

# (scenario, tool, kind, threshold, text): kind "ratio" compares sif_magic with the
# tool (how many times better sif_magic is), "max"/"min" bound the tool's own median
TARGETS: list[tuple[str, str, str, float, str]] = [
    ("s1", "pika round trip (bare)", "ratio", 1.0, "sif_magic >= 1.0x bare pika"),
    ("s1", "Celery", "ratio", 6.0, "sif_magic >= 6x Celery"),
    ("s1", "Dask distributed", "ratio", 6.0, "sif_magic >= 6x Dask"),
    ("s1", "ipyparallel", "ratio", 12.0, "sif_magic >= 12x ipyparallel"),
    ("s2", RABBIT, "min", 100_000, ">= 100,000 calls/s"),
    ("s2", LOCAL, "min", 100_000, ">= 100,000 calls/s"),
    ("s3", RABBIT, "max", 1.1, "<= 1.1 s (ideal +10%)"),
    ("s3", LOCAL, "max", 1.1, "<= 1.1 s (ideal +10%)"),
    ("s4", RABBIT, "max", 20.0, "< 20 ms"),
    ("s4", LOCAL, "max", 20.0, "< 20 ms"),
    ("s5", RABBIT, "max", 150.0, "< 150 MB"),
    ("s5", LOCAL, "max", 150.0, "< 150 MB"),
    ("s7", "ProcessPoolExecutor(2)", "ratio", 0.5, "sif_magic local within 2x"),
    ("e2", ELASTIC, "max", ELASTIC_IDLE + 5, f"<= idle timeout ({ELASTIC_IDLE:g} s) + 5 s"),
    ("e3", ELASTIC, "max", 0, "0 calls"),
    ("s8", RABBIT, "min", 95.0, ">= 95% of the ideal"),
    ("s8", LOCAL, "min", 95.0, ">= 95% of the ideal"),
    ("s9", "pika round trip (bare)", "ratio", 0.8, "sif_magic rabbitmq >= 0.8x bare pika"),
    ("s9", "ProcessPoolExecutor(2)", "ratio", 1.0, "sif_magic local >= 1.0x"),
]
S6_TARGET = 0.9  # on / off throughput


# -- running -----------------------------------------------------------------------


def _alive(proc: Any) -> bool:
    try:
        return proc.is_running() and proc.status() != "zombie"
    except Exception:  # noqa: BLE001
        return False


def run_runner(
    runner: Runner, scenarios: list[str], params: dict[str, Any], log_dir: Path, tag: str
) -> dict[str, Any]:
    """One runner in a fresh process; whatever it leaves behind is stopped by pid."""
    import psutil

    out = log_dir / f"{tag}.json"
    log_path = log_dir / f"{tag}.log"
    cmd = [
        sys.executable,
        "-m",
        runner.module,
        "--scenarios",
        ",".join(scenarios),
        "--params",
        json.dumps(params),
        "--out",
        str(out),
    ]
    seen: dict[int, Any] = {}
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=str(ROOT),
            env=_common.child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C here reaches the runner only through us
        )
        timed_out = False
        try:
            me = psutil.Process(proc.pid)
            while proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    for child in me.children(recursive=True):
                        seen.setdefault(child.pid, child)
                if time.monotonic() - t0 > runner.timeout:
                    timed_out = True
                    break
                time.sleep(0.5)
        finally:
            if proc.poll() is None:  # timed out or interrupted: SIGTERM lets it clean up
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            left = [p for p in seen.values() if _alive(p)]
            for p in left:
                with contextlib.suppress(psutil.Error):
                    p.terminate()
            if left:
                _, still = psutil.wait_procs(left, timeout=5)
                for p in still:
                    with contextlib.suppress(psutil.Error):
                        p.kill()
    dt = time.monotonic() - t0
    try:
        data = json.loads(out.read_text())
    except (OSError, ValueError):
        data = {"measurements": [], "errors": []}
    if timed_out:
        data["errors"].append(
            {"scenario": "*", "tool": runner.name, "error": f"timed out after {runner.timeout:g} s"}
        )
    if not data["measurements"] and not data["errors"]:
        tail = log_path.read_text(errors="replace")[-2000:]
        data["errors"].append(
            {"scenario": "*", "tool": runner.name, "error": f"no result; log tail: {tail}"}
        )
    data["seconds"] = dt
    return data


def broker_problem() -> str:
    try:
        import pika

        params = pika.URLParameters(_common.BROKER_URL)
        params.socket_timeout = 3
        params.connection_attempts = 1
        conn = pika.BlockingConnection(params)
        version = conn._impl.server_properties.get("version", b"?")
        conn.close()
        os.environ["SIF_BENCH_RABBITMQ_VERSION"] = (
            version.decode() if isinstance(version, bytes) else str(version)
        )
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return ""


# -- summarising ---------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    tool: str
    metric: str
    unit: str
    higher_is_better: bool
    values: list[float]
    extras: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    ratio: float | None = None
    ratio_range: tuple[float, float] | None = None
    ratio_note: str = ""
    target: str = ""
    met: bool | None = None
    margin: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "tool": self.tool,
            "metric": self.metric,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "runs": len(self.values),
            "values": self.values,
            "ratio_vs_sif_magic": self.ratio,
            "ratio_per_round_min_max": self.ratio_range,
            "ratio_note": self.ratio_note,
            "target": self.target,
            "target_met": self.met,
            "margin": self.margin,
            "extras": self.extras,
        }


def summarise(measurements: list[dict[str, Any]]) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    for m in measurements:
        key = (m["scenario"], m["tool"])
        row = rows.get(key)
        if row is None:
            row = rows[key] = Row(
                m["scenario"], m["tool"], m["metric"], m["unit"], m["higher_is_better"], []
            )
        row.values.append(m["value"])
        row.extras.append(m.get("extra", {}))
        row.rounds.append(int(m.get("round", 0)))
    out = sorted(rows.values(), key=lambda r: (r.scenario, not r.tool.startswith("sif_magic")))

    def find(scenario: str, tool: str) -> Row | None:
        return rows.get((scenario, tool))

    # ratios: how many times better sif_magic is than the tool (>1: sif_magic better)
    for r in out:
        if r.tool.startswith("sif_magic"):
            continue
        # ProcessPoolExecutor is the local backend's peer; the others the rabbitmq one's
        base = find(r.scenario, LOCAL if r.tool.startswith("ProcessPool") else RABBIT)
        if base is None or not r.median or not base.median:
            continue
        if r.scenario == "s5":  # per call: the runs differ in size
            mine = base.median / _calls(base)
            theirs = r.median / _calls(r)
            r.ratio = theirs / mine if mine > 0 else None
            r.ratio_note = "per call"
        elif r.higher_is_better:
            r.ratio = base.median / r.median
            r.ratio_range = _round_ratios(base, r, lambda a, b: a / b)
        else:
            r.ratio = r.median / base.median
            r.ratio_range = _round_ratios(base, r, lambda a, b: b / a)
    for r in out:  # s9's arrays through the broker (spill_arrays_mb=0): against bare pika
        if r.scenario == "s9" and r.tool == RABBIT_BROKER:
            bare = find("s9", "pika round trip (bare)")
            if bare is not None and bare.median and r.median:
                r.ratio = r.median / bare.median
                r.ratio_range = _round_ratios(r, bare, lambda a, b: a / b)
                r.ratio_note = "its MB/s / bare pika's"
    for r in out:  # monitoring: on / off of the same workload
        if r.scenario == "s6" and " monitoring on, " in r.tool:
            off = find("s6", r.tool.replace(" monitoring on, ", " monitoring off, "))
            if off is not None and off.median:
                r.ratio = r.median / off.median
                r.ratio_range = _round_ratios(r, off, lambda a, b: a / b)
                r.ratio_note = "on / off"
                r.target = f"on/off >= {S6_TARGET}"
                r.met = r.ratio >= S6_TARGET
                change = (1 - r.ratio) * 100
                r.margin = (
                    f"{change:.0f}% slower with monitoring"
                    if change > 0
                    else f"{-change:.0f}% faster with monitoring: noise"
                )
    for scenario, tool, kind, threshold, text in TARGETS:
        r = find(scenario, tool)
        if r is None:
            continue
        r.target = text
        if kind == "ratio":
            if r.ratio is None:
                continue
            r.met = r.ratio >= threshold
            r.margin = f"{r.ratio / threshold:.2f}x of target"
        elif kind == "min":
            r.met = r.median >= threshold
            r.margin = f"{r.median / threshold:.2f}x of target"
        else:
            r.met = r.median <= threshold
            r.margin = (
                f"{(r.median / threshold - 1) * 100:+.0f}% vs limit"
                if threshold
                else f"{r.median:g} vs 0"
            )
    for r in out:  # s2: the per-call states must all be 'done'
        if r.scenario == "s2":
            bad = [
                e.get("states")
                for e in r.extras
                if e.get("states", {}).get("done") != e.get("calls")
            ]
            if bad:
                r.met = False
                r.margin += f"; states wrong: {bad[0]}"
    return out


def _round_ratios(a: Row, b: Row, ratio: Any) -> tuple[float, float] | None:
    """min and max over rounds of ratio(median of a, median of b) within the same round."""
    out = []
    for rnd in sorted(set(a.rounds) & set(b.rounds)):
        va = [v for v, k in zip(a.values, a.rounds) if k == rnd]
        vb = [v for v, k in zip(b.values, b.rounds) if k == rnd]
        if va and vb and min(va + vb) > 0:
            out.append(ratio(statistics.median(va), statistics.median(vb)))
    return (min(out), max(out)) if len(out) > 1 else None


def _calls(row: Row) -> float:
    calls = [e.get("calls", 0) for e in row.extras if e.get("calls")]
    return statistics.median(calls) if calls else 1.0


def fmt(value: float, unit: str) -> str:
    if unit == "calls/s":
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    if unit in ("ms", "MB/s"):
        return f"{value:.1f}"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:.1f}"


def table(rows: list[Row]) -> str:
    head = ["scenario", "tool", "metric", "median", "min-max", "ratio", "target", "met?"]
    lines = []
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        if r.ratio_range:
            ratio += f" [{r.ratio_range[0]:.2f}-{r.ratio_range[1]:.2f}]"
        if r.ratio_note and r.ratio is not None:
            ratio += f" ({r.ratio_note})"
        met = "" if r.met is None else ("yes" if r.met else "NO")
        if r.margin and r.met is not None:
            met += f" ({r.margin})"
        lines.append(
            [
                r.scenario,
                r.tool,
                f"{r.metric} [{r.unit}]",
                fmt(r.median, r.unit),
                f"{fmt(min(r.values), r.unit)}-{fmt(max(r.values), r.unit)} (n={len(r.values)})",
                ratio,
                r.target,
                met,
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths))]
    out.append("-+-".join("-" * w for w in widths))
    last = None
    for line in lines:
        if last is not None and line[0] != last:
            out.append("-+-".join("-" * w for w in widths))
        last = line[0]
        out.append(" | ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    return "\n".join(out)


def markdown(rows: list[Row]) -> str:
    out = [
        "| scenario | tool | metric | median | min-max | ratio [per round] | target | met? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
        if r.ratio is not None and r.ratio_range:
            ratio += f" [{r.ratio_range[0]:.2f}-{r.ratio_range[1]:.2f}]"
        if r.ratio is not None and r.ratio_note:
            ratio += f" ({r.ratio_note})"
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        out.append(
            f"| {r.scenario} | {r.tool} | {r.metric} | {fmt(r.median, r.unit)} {r.unit} | "
            f"{fmt(min(r.values), r.unit)}-{fmt(max(r.values), r.unit)} | {ratio} | {r.target} "
            f"| {met} |"
        )
    return "\n".join(out)


def plot(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [s for s in SCENARIOS if any(r.scenario == s for r in rows)]
    if not scenarios:
        return
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(11, 2.3 * len(scenarios) + 1.0))
    if len(scenarios) == 1:
        axes = [axes]
    limits = {(s, t): th for s, t, k, th, _ in TARGETS if k in ("min", "max")}
    for ax, s in zip(axes, scenarios):
        srows = [r for r in rows if r.scenario == s]
        labels = [f"{r.tool} ({_calls(r):,.0f} calls)" if s == "s5" else r.tool for r in srows]
        med = [r.median for r in srows]
        lo = [r.median - min(r.values) for r in srows]
        hi = [max(r.values) - r.median for r in srows]
        colors = ["#2b6cb0" if r.tool.startswith("sif_magic") else "#a0aec0" for r in srows]
        y = range(len(srows))
        ax.barh(list(y), med, xerr=[lo, hi], color=colors, capsize=3)
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        unit = srows[0].unit
        better = "higher is better" if srows[0].higher_is_better else "lower is better"
        ax.set_title(f"{SCENARIOS[s]}  [{unit}, {better}]", fontsize=9, loc="left")
        if unit == "calls/s" and max(med) / max(min(med), 1e-9) > 30:
            ax.set_xscale("log")
        for (ts, tool), th in limits.items():
            if ts == s and any(r.tool == tool for r in srows):
                ax.axvline(th, color="#c53030", linestyle="--", linewidth=1)
        for yi, r in zip(y, srows):
            ax.text(max(r.values), yi, f"  {fmt(r.median, r.unit)}", va="center", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in (
        "sif_magic",
        "pika",
        "cloudpickle",
        "celery",
        "kombu",
        "dask",
        "distributed",
        "ipyparallel",
        "lithops",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["rabbitmq"] = os.environ.get("SIF_BENCH_RABBITMQ_VERSION", "?")
    return out


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


# -- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="e.g. s1,s4")
    ap.add_argument(
        "--tools",
        default="",
        help="runners to use (default all): " + ",".join(r.name for r in RUNNERS),
    )
    ap.add_argument("--quick", action="store_true", help="smaller runs, 1 round (a smoke test)")
    ap.add_argument("--out", default=str(RESULTS / "latest"), help="PATH -> PATH.json, PATH.png")
    ap.add_argument(
        "--report", metavar="JSON", help="measure nothing: print the table of JSON, redraw its plot"
    )
    args = ap.parse_args(argv)
    if args.report:
        data = json.loads(Path(args.report).read_text())
        rows = summarise(data["measurements"])
        print(table(rows))
        meta = data["meta"]
        png = Path(args.report).with_suffix(".png")
        plot(
            rows,
            png,
            f"sif_magic vs peers, {meta['repeats']} round(s), median and min-max; {meta['date']} "
            f"({meta['cpus']} cores, RabbitMQ {meta['versions']['rabbitmq']})",
        )
        print(f"wrote {png}")
        return 0
    params: dict[str, Any] = {"n1": 3000, "n2": 100_000, "n3": 200, "n4": 30, "n5": 100_000}
    # s6 with automatic chunks: 100,000 calls last ~0.1 s now, where a scheduler
    # hiccup is 10%; a million give the on/off ratio a second to settle
    params["n6"] = 1_000_000
    params.update(n5_peers=10_000, n1_lithops=40, inner=2, n8=1000, n9=40, mb9=8)
    params.update(
        idle=ELASTIC_IDLE, n_e1=8, n_e3=24, s_e3=10
    )  # e3: 120 s of calls on 2 processes, 60 s jobs
    repeats = max(1, args.repeats)
    if args.quick:
        params.update(n1=500, n2=20_000, n4=10, n5=20_000, n5_peers=1000, n1_lithops=6, inner=1)
        params.update(n6=20_000, n9=8)  # e3 as it is: fewer calls would not reach the walltime
        repeats = 1
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    plan = [
        (r, [s for s in r.scenarios if s in wanted])
        for r in RUNNERS
        if (not tools or r.name in tools) and any(s in wanted for s in r.scenarios)
    ]
    problem = broker_problem()
    if problem:
        print(
            f"RabbitMQ at 127.0.0.1:5672 does not answer ({problem}); start it first "
            "(scripts/test does)",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_dir = out.parent / "logs"
    log_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    measurements: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    runner_seconds: dict[str, list[float]] = {}
    print(f"sif_magic benchmarks: {repeats} round(s), {len(plan)} runners, logs in {log_dir}")
    try:
        for rnd in range(repeats):
            order = plan[rnd % len(plan) :] + plan[: rnd % len(plan)]
            for runner, scenarios in order:
                tag = f"r{rnd + 1}-{runner.name}"
                print(
                    f"[round {rnd + 1}/{repeats}] {runner.name} ({','.join(scenarios)}) ...",
                    flush=True,
                )
                data = run_runner(runner, scenarios, dict(params, round=rnd), log_dir, tag)
                runner_seconds.setdefault(runner.name, []).append(data["seconds"])
                for m in data["measurements"]:
                    m["round"] = rnd + 1
                    measurements.append(m)
                    print(
                        f"    {m['scenario']} {m['tool']}: {fmt(m['value'], m['unit'])} {m['unit']}"
                    )
                for e in data["errors"]:
                    e["round"] = rnd + 1
                    errors.append(e)
                    print(f"    ERROR {e['scenario']} {e['tool']}: {e['error'][:300]}")
                print(f"    ({data['seconds']:.1f} s)", flush=True)
    except KeyboardInterrupt:
        print("interrupted: summarising what was measured", file=sys.stderr)
    total = time.monotonic() - started
    rows = summarise(measurements)
    print()
    print(table(rows))
    print()
    print("ratio: how many times better sif_magic (rabbitmq; local against ProcessPoolExecutor)")
    print("       is than the tool,")
    print("       median of all runs [min-max of the per-round ratios]")
    print("       (its throughput / theirs, or their time or memory / its); s5 per call;")
    print("       s6 sif_magic throughput with monitoring on / off.")
    print("s6 'monitoring off' is Executor(monitor=False): no live events for the job.")
    if errors:
        print(f"\n{len(errors)} error(s):")
        for e in errors:
            print(f"  round {e['round']} {e['scenario']} {e['tool']}: {e['error'][:500]}")
    print(f"\nwhole benchmark: {total:.0f} s")
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
        "repeats": repeats,
        "quick": args.quick,
        "params": params,
        "versions": versions(),
        "seconds_total": total,
        "seconds_per_runner": runner_seconds,
        "scenarios": SCENARIOS,
    }
    Path(f"{out}.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "summary": [r.as_dict() for r in rows],
                "measurements": measurements,
                "errors": errors,
                "markdown": markdown(rows),
            },
            indent=1,
        )
    )
    try:
        plot(
            rows,
            Path(f"{out}.png"),
            f"sif_magic vs peers, {repeats} round(s), median and min-max; {meta['date']} "
            f"({meta['cpus']} cores, RabbitMQ {meta['versions']['rabbitmq']})",
        )
    except Exception as e:  # noqa: BLE001 - the table and JSON are what matter
        print(f"could not draw the plot: {e}", file=sys.stderr)
    print(f"wrote {out}.json and {out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
