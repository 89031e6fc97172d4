"""Reading an image: its labels (with apptainer/singularity ``inspect``, else Debian's
``siftool`` + ``unsquashfs``) and whether its versions fit this kernel. Standard
library only; no state, no threads."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import containers
from ..errors import ConfigError
from .recipe import LABEL_PREFIX, kernel_versions


@dataclass
class ImageInfo:
    path: str
    reader: str  # the tool that read the labels
    labels: dict[str, str]
    definition: str = ""

    def versions(self) -> dict[str, str]:
        n = len(LABEL_PREFIX)
        return {k[n:]: v for k, v in self.labels.items() if k.startswith(LABEL_PREFIX)}


def check_versions(image: dict[str, str], kernel: dict[str, str] | None = None) -> list[str]:
    """Why an image's worker cannot run this kernel's functions ([] when it can)."""
    kernel = kernel or kernel_versions()
    problems = []
    if image.get("python") and image["python"] != kernel["python"]:
        problems.append(f"Python {image['python']} in the image, {kernel['python']} in the kernel")
    ic, kc = image.get("cloudpickle", ""), kernel.get("cloudpickle", "")
    if ic and kc and ic.split(".")[0] != kc.split(".")[0]:
        problems.append(f"cloudpickle {ic} in the image, {kc} in the kernel (major differs)")
    if image.get("protocol") and image["protocol"] != kernel["protocol"]:
        problems.append(f"protocol {image['protocol']} in the image, {kernel['protocol']} here")
    return problems


def _find_labels(obj: object) -> dict[str, str] | None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key.lower() == "labels" and isinstance(value, dict):
                return {str(k): str(v) for k, v in value.items()}
        for value in obj.values():
            found = _find_labels(value)
            if found is not None:
                return found
    return None


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def _inspect_with_siftool(image: str, siftool: str) -> ImageInfo:
    listing = _run([siftool, "list", image])
    if listing.returncode != 0:
        raise ConfigError(f"siftool cannot read {image}: {listing.stderr.strip()}")
    labels: dict[str, str] | None = None
    definition = ""
    fs_offset = None
    for line in listing.stdout.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < 5 or not cols[0].isdigit():
            continue
        oid, kind = cols[0], cols[4]
        if kind.startswith("JSON.Generic") and labels is None:
            dump = _run([siftool, "dump", oid, image])
            try:
                labels = _find_labels(json.loads(dump.stdout))
            except ValueError:
                pass
        elif kind.startswith("Def.FILE"):
            definition = _run([siftool, "dump", oid, image]).stdout
        elif kind.startswith("FS (Squashfs") and fs_offset is None:
            fs_offset = int(cols[3].split("-")[0])
    reader = "siftool"
    if labels is None and fs_offset is not None:
        unsquashfs = shutil.which("unsquashfs")
        if unsquashfs is None:
            raise ConfigError(
                f"{image} keeps its labels in its squashfs partition: install squashfs-tools "
                "(apt-get install squashfs-tools) to read them, or run `singularity inspect`"
            )
        cat = _run([unsquashfs, "-o", str(fs_offset), "-cat", image, ".singularity.d/labels.json"])
        if cat.returncode == 0 and cat.stdout.strip():
            labels = {str(k): str(v) for k, v in json.loads(cat.stdout).items()}
            reader = "siftool + unsquashfs"
    return ImageInfo(image, reader, labels or {}, definition)


def inspect_image(image: str) -> ImageInfo:
    """Read an image's labels with singularity/apptainer, else Debian's siftool."""
    if not Path(image).is_file():
        raise ConfigError(f"{image}: no such image file")
    runner = containers.get("auto")
    tool = runner.which()
    if tool:
        labels_argv, definition_argv = runner.inspect_argvs(tool, image)
        res = _run(labels_argv)
        if res.returncode != 0:
            raise ConfigError(f"{Path(tool).name} inspect {image} failed: {res.stderr.strip()}")
        definition = _run(definition_argv).stdout
        labels = _find_labels(json.loads(res.stdout or "{}")) or {}
        return ImageInfo(image, f"{Path(tool).name} inspect", labels, definition)
    siftool = shutil.which("siftool")
    if siftool:
        return _inspect_with_siftool(image, siftool)
    raise ConfigError(
        f"cannot read {image}: neither apptainer, singularity nor siftool is installed here. "
        "Install one (Debian: apt-get install siftool squashfs-tools), or run "
        f"`singularity inspect --labels {image}` where Singularity is"
    )
