"""``sif-magic runtime def | build | inspect``: worker images (see ``sif_magic.images``)."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import containers
from .. import images as img
from ..validate import check_name, check_path
from ._common import guard


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("runtime", help="worker images: definition file, build, inspect")
    sub = p.add_subparsers(dest="runtime_command", metavar="{def,build,inspect}", required=True)

    d = sub.add_parser("def", help="write a Singularity definition file (or a Dockerfile)")
    d.add_argument("name", nargs="?", default="worker", help="image name (default: worker)")
    d.add_argument("-o", "--output", help="file to write (default NAME.def; '-' for stdout)")
    d.add_argument("--python", default=img.kernel_versions()["python"], help="Python minor")
    d.add_argument("--base", default="", help="base image (default docker://python:X.Y-slim)")
    d.add_argument("--requirements", default="", metavar="FILE", help="requirements.txt")
    d.add_argument("--packages", nargs="+", default=[], metavar="PKG", help="pip packages")
    d.add_argument("--apt", nargs="+", default=[], metavar="PKG", help="apt packages")
    d.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="DIR",
        help="bind target to create in the image (repeatable; /scratch always)",
    )
    d.add_argument("--runtime", default="", help="runtime name (default NAME.sif)")
    d.add_argument(
        "--sif-magic",
        default="",
        metavar="SPEC",
        help="how to install sif_magic: pip spec, or a local wheel/source dir",
    )
    d.add_argument("--dockerfile", action="store_true", help="write NAME.Dockerfile instead")
    d.set_defaults(func=guard(_runtime_def))

    b = sub.add_parser("build", help="singularity/apptainer build NAME.sif from a .def")
    b.add_argument("image", help="NAME.sif to build")
    b.add_argument("definition", nargs="?", help="definition file (default NAME.def)")
    mode = b.add_mutually_exclusive_group()
    mode.add_argument("--fakeroot", dest="mode", action="store_const", const="fakeroot")
    mode.add_argument("--remote", dest="mode", action="store_const", const="remote")
    mode.add_argument("--sudo", dest="mode", action="store_const", const="sudo")
    b.add_argument("--builder", choices=containers.builders(), default="")
    b.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    b.set_defaults(func=guard(_runtime_build), mode=None)

    i = sub.add_parser("inspect", help="what an image holds; do its versions fit the kernel?")
    i.add_argument("image")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=guard(_runtime_inspect))


def _spec_from(args: argparse.Namespace) -> img.ImageSpec:
    check_name(args.name, "image name")
    if args.output and args.output != "-":
        check_path(args.output, "--output")
    return img.ImageSpec(
        runtime=args.runtime or f"{args.name}.sif",
        python=args.python,
        base=args.base,
        requirements=args.requirements,
        packages=args.packages,
        apt=args.apt,
        mounts=args.mount,
        sif_magic=args.sif_magic,
    )


def _runtime_def(args: argparse.Namespace) -> int:
    spec = _spec_from(args)
    if args.output != "-":
        out_dir = Path(args.output).parent if args.output else Path(".")
        wheel = spec.wheel_for_image(out_dir)
        if wheel is not None:
            print(
                f"built {wheel} from the local sif_magic source; the image installs it",
                file=sys.stderr,
            )
    text = img.dockerfile(spec) if args.dockerfile else img.definition_file(spec)
    out = args.output or (f"{args.name}.Dockerfile" if args.dockerfile else f"{args.name}.def")
    if out == "-":
        sys.stdout.write(text)
        return 0
    Path(out).write_text(text)
    print(f"wrote {out} (runtime {spec.runtime}, Python {spec.python}, base {spec.base})")
    if args.dockerfile:
        tag = f"REGISTRY/{args.name}"
        print(f"next: docker build -t {tag} -f {out} . && docker push {tag}")
        print(f"then on the cluster: singularity pull {spec.runtime} docker://REGISTRY/{args.name}")
    else:
        print(f"next: sif-magic runtime build {spec.runtime} {out}")
    print(f"in the notebook: %sif_config runtime={spec.runtime}")
    return 0


def _runtime_build(args: argparse.Namespace) -> int:
    image = check_path(args.image, "image")  # also in the commands printed to copy
    definition = check_path(args.definition or str(Path(image).with_suffix(".def")), "definition")
    if not Path(definition).exists():
        if args.definition:
            print(f"sif-magic: error: {definition}: no such file", file=sys.stderr)
            return 2
        name = Path(image).stem
        Path(definition).write_text(img.definition_file(img.ImageSpec(runtime=Path(image).name)))
        print(f"wrote {definition} (defaults; edit it or use `sif-magic runtime def {name}`)")
    mode = args.mode or img.default_build_mode()
    argv = img.build_command(image, definition, mode, args.builder)
    if argv is None:
        print(img.build_instructions(image, definition, mode))
        return 3
    print("$ " + shlex.join(argv), flush=True)
    if args.dry_run:
        return 0
    return subprocess.run(argv, check=False).returncode


def _runtime_inspect(args: argparse.Namespace) -> int:
    info = img.inspect_image(args.image)
    versions = info.versions()
    kernel = img.kernel_versions()
    problems = img.check_versions(versions, kernel)
    if args.json:
        print(json.dumps({**asdict(info), "kernel": kernel, "problems": problems}, indent=1))
    else:
        size = Path(args.image).stat().st_size / 1e6
        print(f"image       {args.image} ({size:.1f} MB), read with {info.reader}")
        for key in ("runtime", "python", "cloudpickle", "version", "protocol"):
            here = kernel.get(key, "")
            name = "sif_magic" if key == "version" else key
            print(
                f"{name:<11} {versions.get(key, '?'):<10} kernel {here}"
                if here
                else f"{name:<11} {versions.get(key, '?')}"
            )
        others = {k: v for k, v in info.labels.items() if not k.startswith(img.LABEL_PREFIX)}
        for k, v in sorted(others.items()):
            print(f"label       {k} = {v}")
        base = [ln for ln in info.definition.splitlines() if ln.lower().startswith("from:")]
        if base:
            print(f"built from  {base[0].split(':', 1)[1].strip()}")
    if not versions:
        print(
            f"{args.image} has no sif_magic labels: was it built from `sif-magic runtime def`?",
            file=sys.stderr,
        )
        return 1
    if problems:
        print("INCOMPATIBLE with this kernel: " + "; ".join(problems), file=sys.stderr)
        print(
            f"rebuild: sif-magic runtime def {Path(args.image).stem} --python {kernel['python']}"
            f" && sif-magic runtime build {args.image}",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        print("compatible with this kernel")
    return 0
