#!/usr/bin/env bash
# Download here the wheels that scripts/gpu_check.sh installs on a bare GPU machine, which reaches no
# package registry. They go to .whl/ (ignored by git), which the device tool carries with `carry: [".whl"]`.
#
#   scripts/gpu_wheels.sh          # then: du -sh .whl; the report below checks the 64 MiB carry limit
#
# The device image (see docs/gpu.md) has Python 3.12 with torch, numpy, pytest, accelerate, einops,
# safetensors, sentencepiece, huggingface-hub, tqdm and PyYAML: torch itself comes from the image, never
# from here (a CUDA torch wheel is ~900 MB, far over the limit). What the repo needs beyond them: moshi
# (no deps: its pins are stale, see scripts/setup.sh), hydra-core, omegaconf, antlr4-python3-runtime
# (omegaconf's parser; published as an sdist only, so it is built into a pure-Python wheel here),
# soundfile and soxr (audio I/O), and cffi (soundfile's binding). Versions follow .venv when it has them,
# so the device runs what the tests here ran.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=${DEST:-.whl}
PYVER=${PYVER:-3.12}
PY=${PYTHON:-.venv/bin/python}
[[ -x $PY ]] || PY=python3

version() {  # the version installed in the local venv, else the fallback pin
  "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1" 2>/dev/null || echo "$2"
}

BINARY=(
  "moshi==$(version moshi 0.2.13)"
  "hydra-core==$(version hydra-core 1.3.2)"
  "omegaconf==$(version omegaconf 2.3.0)"
  "soundfile==$(version soundfile 0.13.1)"
  "soxr==$(version soxr 0.5.0.post1)"
  "cffi==$(version cffi 1.17.1)"
  "pycparser==$(version pycparser 2.22)"
)
SDIST=("antlr4-python3-runtime==$(version antlr4-python3-runtime 4.9.3)")

mkdir -p "$DEST"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
  manylinux1_x86_64 manylinux_2_24_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 any; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp "${platforms[@]}" -d "$DEST" "${BINARY[@]}"
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$DEST" "${SDIST[@]}"

# One version of each package: two would stop the install on the device.
dupes=$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
[[ -z $dupes ]] || { echo "gpu_wheels: several versions of: $dupes; empty $DEST and rerun" >&2; exit 1; }

wheels=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s}')
limit=$((64 * 1024 * 1024))
ls -l "$DEST"/*.whl | awk '{printf "  %8.1f KiB  %s\n", $5 / 1024, $9}'
printf 'gpu_wheels: wheels %.1f MiB + working tree %.1f MiB = %.1f MiB of the 64 MiB carry limit\n' \
  "$(echo "$wheels / 1048576" | bc -l)" "$(echo "$tree / 1048576" | bc -l)" "$(echo "($wheels + $tree) / 1048576" | bc -l)"
if ((wheels + tree > limit)); then
  echo "gpu_wheels: OVER the limit: carry less" >&2
  exit 1
fi
