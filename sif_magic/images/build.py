"""Building an image: ``sif-magic runtime build`` runs Apptainer or Singularity (the
command line comes from ``sif_magic.containers``), or says what to run elsewhere.
Standard library only; no state, no threads."""

from __future__ import annotations

import os
from pathlib import Path

from .. import containers


def build_command(
    image: str, definition: str, mode: str = "", builder: str = ""
) -> list[str] | None:
    """The argv that builds ``image`` from ``definition`` with ``builder`` (default:
    apptainer, else singularity), or None when it is not on PATH."""
    runner = containers.get(builder or "auto")
    tool = runner.which()
    return runner.build_argv(tool, image, definition, mode) if tool else None


def build_instructions(image: str, definition: str, mode: str = "") -> str:
    """What to run on a machine that has Singularity/Apptainer (or Docker)."""
    name = Path(image).stem
    flag = f"--{mode} " if mode in ("fakeroot", "remote") else "--fakeroot "
    return "\n".join(
        [
            "Neither apptainer nor singularity is on PATH here, so nothing was built.",
            f"Copy {definition} to a machine that has one (a cluster login node, a laptop",
            "with Apptainer) and run there:",
            f"    apptainer build {flag}{image} {definition}",
            f"    # or: singularity build {flag}{image} {definition}",
            f"    # or, with Sylabs' remote builder: singularity build --remote {image} {definition}",
            "Or build with Docker and pull the image on the cluster:",
            f"    sif-magic runtime def {name} --dockerfile",
            f"    docker build -t REGISTRY/{name}:latest -f {name}.Dockerfile .",
            f"    docker push REGISTRY/{name}:latest",
            f"    singularity pull {image} docker://REGISTRY/{name}:latest",
        ]
    )


def default_build_mode() -> str:
    mode = os.environ.get("SIF_MAGIC_BUILD_MODE", "")
    if mode:
        return mode
    return "" if os.geteuid() == 0 else "fakeroot"
