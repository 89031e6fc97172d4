"""On a machine with real GPUs and PyTorch: a PyTorch call per GPU, each on its own device.

    python scripts/gpu_check.py            # the local backend, gpus=auto
    python scripts/gpu_check.py --gpus 0,1

Each call reports the CUDA_VISIBLE_DEVICES it saw, the name and UUID of the one
device torch sees there, and a small matrix product done on it. The check passes
when every call saw exactly one device and no two calls saw the same one. The
test suite cannot do this (its machines have no GPU); see docs/cluster.md.
"""

from __future__ import annotations

import argparse
import sys


def probe(i: int) -> dict:
    import os

    import torch

    n = torch.cuda.device_count()
    out = {"call": i, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "count": n}
    if n:
        props = torch.cuda.get_device_properties(0)
        out["name"] = props.name
        out["uuid"] = str(getattr(props, "uuid", "")) or f"{props.name}-{props.pci_bus_id}"
        x = torch.randn(512, 512, device="cuda")
        out["sum"] = float((x @ x).sum().item())
        out["threads"] = torch.get_num_threads()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus", default="auto", help="auto or 0,1,... (the local backend's gpus)")
    p.add_argument("--cpus-per-call", type=int, default=2)
    args = p.parse_args()
    try:
        import torch
    except ImportError:
        print("gpu_check: PyTorch is not installed here", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_check: torch sees no GPU on this machine", file=sys.stderr)
        return 2
    from sif_magic import Executor

    with Executor(backend="local", gpus=args.gpus) as ex:
        n = len(ex.backend.gpus)  # type: ignore[attr-defined]
        job = ex.map_job(probe, range(n), chunksize=1, resources={"cpus": args.cpus_per_call})
        rows = job.results(timeout=600)
    for r in rows:
        print(r)
    ids = [r.get("uuid") for r in rows]
    ok = all(r["count"] == 1 for r in rows) and len(set(ids)) == len(ids) == n
    ok = ok and all(r.get("threads") == args.cpus_per_call for r in rows)
    print("OK: each call ran on its own GPU" if ok else "FAILED: calls shared or missed GPUs")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
