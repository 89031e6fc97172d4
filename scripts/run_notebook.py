"""Execute a notebook headless (nbclient) and print what its cells showed."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main(path: str) -> int:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(Path(path).parent)}},
    ).execute()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        print(">>> " + cell.source.splitlines()[0] if cell.source else ">>>")
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                print(out.text.rstrip())
            elif out.output_type in ("execute_result", "display_data"):
                text = out.data.get("text/plain", "")
                if text:
                    print(text.rstrip())
            elif out.output_type == "error":
                print(f"{out.ename}: {out.evalue}")
    print(f"executed {path}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
