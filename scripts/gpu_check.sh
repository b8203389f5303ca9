#!/usr/bin/env bash
# The GPU loop in one command (issue #46; docs/gpu.md): on a bare GPU machine with this repo copied over,
# install the wheels carried in .whl/ (scripts/gpu_wheels.sh downloads them here), then run
# scripts/gpu_check.py: CUDA tests, engine tick times at the tiny and 7B shapes, both trainers' throughput
# and MFU, in at most ten minutes. Results in $OUT (else runs/gpu_check/): results.md, results.json.
#
#   scripts/gpu_check.sh               # on the GPU machine
#   scripts/gpu_check.sh --dry-run     # here, on CPU at toy sizes (no wheels installed: .venv has them)
#
# torch comes from the device image's python3 (a CUDA torch wheel would not fit the carry limit).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [[ -z $PY ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
dry=0
for a in "$@"; do [[ $a == --dry-run ]] && dry=1; done

if ((!dry)) && compgen -G ".whl/*.whl" >/dev/null; then
  site=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    .whl/*.whl || { echo "gpu_check: installing .whl/*.whl failed" >&2; exit 2; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ((!dry)); then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
fi
exec "$PY" scripts/gpu_check.py "$@"
