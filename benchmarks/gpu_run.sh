#!/usr/bin/env bash
# The one command for a lent GPU machine (no network there): the wheels that its
# image lacks (.whl/, made here by `python -m benchmarks.build_wheelhouse`, carried
# with the tree), then benchmarks/gpu_run.py, within its own 450 s budget by default.
#   bash benchmarks/gpu_run.sh                # writes $OUT/gpu.json and $OUT/gpu.md
#   bash benchmarks/gpu_run.sh --smoke        # CPU, tiny shapes (benchmarks/gpu_rehearsal.py)
# GPU_RUN_SITE: where the wheels are installed (default /tmp/site); PYTHON: the
# interpreter (default python3, the one that holds torch there).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${GPU_RUN_SITE:-/tmp/site}
"$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" .whl/*.whl
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" -m benchmarks.gpu_run "$@"
