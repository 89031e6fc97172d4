#!/usr/bin/env bash
# Create benchmarks/.venv: sif_magic (editable) plus the peers it is compared with.
#   celery, dask[distributed], ipyparallel, lithops (localhost backend), matplotlib
#   (the plot), pyinstrument (profiles), numpy (s9), pytest (e1-e3 use tests/slurm_cluster.py). Everything comes from PyPI.
# Idempotent: a second run only checks that everything is there.
# RabbitMQ must answer on 127.0.0.1:5672 (scripts/test starts it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=benchmarks/.venv
STAMP=$VENV/.sif-bench-installed
REQS=(
  "celery>=5.3"
  "dask[distributed]>=2024.1"
  "ipyparallel>=8.8"
  "lithops>=3.4"
  "matplotlib>=3.7"
  "pyinstrument>=4.6"
  "py-spy>=0.3"
  "numpy>=1.22"
  "pytest>=8"  # e1-e3 start the one-node SLURM cluster of tests/slurm_cluster.py (a pytest plugin)
)

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
fi

want="$(printf '%s\n' "${REQS[@]}") $(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
  && "$VENV/bin/python" -c "import sif_magic, celery, distributed, ipyparallel, matplotlib" 2>/dev/null; then
  echo "== $VENV is ready"
  exit 0
fi

echo "== installing sif_magic (editable) and the peers into $VENV"
# (pip warns about index locations of some machines that do not exist: not shown)
quiet() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
"$VENV/bin/python" -m pip install -q --upgrade pip 2> >(quiet)
# the JupyterLab front-end is not needed to benchmark: skip its Node.js build
SKIP_JUPYTER_BUILDER=1 "$VENV/bin/python" -m pip install -q -e . "${REQS[@]}" 2> >(quiet)
echo "$want" >"$STAMP"
"$VENV/bin/python" -c "import sif_magic, celery, distributed, ipyparallel, matplotlib; print('== ready: sif_magic', sif_magic.__version__)"
