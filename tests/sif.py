"""A real SIF image built without Singularity: Debian's siftool, as NOTES.md tells."""

from __future__ import annotations

import subprocess
from pathlib import Path


def add_squashfs_partition(image: Path, squashfs: Path) -> None:
    """Add ``squashfs`` to ``image`` as its system partition (what ``singularity build``
    writes: data type 4, partition type 2, squashfs, amd64), so squashfuse can mount it."""
    subprocess.run(
        ["siftool", "add", str(image), str(squashfs), "--datatype", "4", "--parttype", "2",
         "--partfs", "1", "--partarch", "2"],
        check=True,
        capture_output=True,
    )  # fmt: skip
