"""What a side runs (Python, cloudpickle) and whether two sides can share pickles.

A function cloudpickled by one Python minor version cannot run on another, and
cloudpickle's format changes between major versions. Both sides ask the same
question through ``incompatibility``: the worker about a task (the notebook's
versions travel in it), the client about a worker (its versions travel in its
heartbeat).

Threads: any; ``versions()`` is computed once (it imports cloudpickle).
"""

from __future__ import annotations

import functools
import sys


@functools.cache
def versions() -> tuple[str, str]:
    """This process's Python major.minor and cloudpickle version."""
    import cloudpickle

    return f"{sys.version_info[0]}.{sys.version_info[1]}", cloudpickle.__version__


def incompatibility(notebook: tuple[str, str], worker: tuple[str, str]) -> str:
    """Why a worker with ``worker`` = (Python, cloudpickle) cannot run what a notebook
    with ``notebook`` pickled, and what to do ('' if it can). A version left empty
    (not known) is no reason."""
    (py, cp), (wpy, wcp) = notebook, worker
    fix = (
        "Rebuild the runtime image in the notebook's environment: sif-magic runtime def "
        f"--python {py} (it pins cloudpickle=={cp})"
    )
    if py and wpy and py != wpy:
        return (
            f"the notebook runs Python {py} but the worker runs Python {wpy}: functions "
            f"pickled by one cannot run on the other. {fix}"
        )
    if cp and wcp and cp.split(".")[0] != wcp.split(".")[0]:
        return f"the notebook has cloudpickle {cp} but the worker has {wcp}. {fix}"
    return ""
