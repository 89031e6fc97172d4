"""Worker images: what goes into one (``recipe``), building it (``build``), reading
what an image holds (``labels``).

An image holds only the environment (Python, sif_magic's worker, the user's
packages): code travels with each call, data through bind paths. The container
tools' command lines come from ``sif_magic.containers``. Standard library only;
nothing here holds state or starts a thread (the CLI's thread calls it).
"""

from __future__ import annotations

from .build import build_command, build_instructions, default_build_mode
from .labels import ImageInfo, check_versions, inspect_image
from .recipe import (
    DEFAULT_MOUNTS,
    ENTRY,
    LABEL_PREFIX,
    VENV,
    ImageSpec,
    definition_file,
    dockerfile,
    entry_script,
    installed_source,
    kernel_versions,
)

__all__ = [
    "DEFAULT_MOUNTS",
    "ENTRY",
    "LABEL_PREFIX",
    "VENV",
    "ImageInfo",
    "ImageSpec",
    "build_command",
    "build_instructions",
    "check_versions",
    "default_build_mode",
    "definition_file",
    "dockerfile",
    "entry_script",
    "inspect_image",
    "installed_source",
    "kernel_versions",
]
