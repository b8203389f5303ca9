#!/usr/bin/env bash
# Create .venv and install everything e2e-voice needs; idempotent (a stamp skips work already done).
#
#   scripts/setup.sh            system packages (when root), Python packages, offline model bundle
#   SKIP_MODELS=1 scripts/setup.sh   everything but the model bundle
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
APT_PACKAGES=(espeak-ng flite festival festvox-kallpc16k libopus0 libportaudio2 libsndfile1 chromium chromium-driver)

# --- system packages -------------------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages; run:  sudo apt-get install -y ${missing[*]}" >&2
  fi
fi

# --- python environment ----------------------------------------------------------------------------
stamp_key=$(cat constraints.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
stamp="$VENV/.setup-$stamp_key"
if [[ ! -f $stamp ]]; then
  [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
  pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  # torch first and alone: constraints.txt pins the verified build (a CPU wheel on our machines), so
  # nothing later can pull in a multi-GB CUDA build.
  "${pip[@]}" -c constraints.txt torch
  # compat mode: a plain path entry, so a second checkout (a git worktree) imports its own code first.
  "${pip[@]}" -c constraints.txt -e '.[dev]' --config-settings editable_mode=compat
  # moshi 0.2.13 pins torch<2.10, numpy<2.3 and huggingface-hub<1.0; those pins are stale and its
  # real runtime needs are in pyproject.toml, so it goes in without its declared dependencies.
  "${pip[@]}" --no-deps -c constraints.txt moshi
  "$VENV/bin/python" -c "import torch, moshi, e2e_voice; print('setup: torch', torch.__version__, '| moshi', moshi.__version__)"
  rm -f "$VENV"/.setup-*
  touch "$stamp"
fi

# --- offline model bundle --------------------------------------------------------------------------
if [[ -z ${SKIP_MODELS:-} ]]; then
  "$VENV/bin/e2e-voice" models install
fi
