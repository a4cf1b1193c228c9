#!/usr/bin/env bash
# Create the project's virtual environment (.venv) if it is missing or incomplete.
# torch is installed FIRST and pinned exactly (CPU wheel); nothing afterwards may replace it.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${MTPKDOT_VENV:-.venv}
PY=${PYTHON:-python3}
export MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 PIP_DISABLE_PIP_VERSION_CHECK=1
stamp="$VENV/.mtpkdot-installed"
want=$(cat pyproject.toml workflow/scripts/setup_env.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
LOG="$VENV/setup.log"
: > "$LOG"
pip_install() {  # quiet on success (full log in $LOG), the log's tail on failure
  if ! "$VENV/bin/python" -m pip install "$@" >>"$LOG" 2>&1; then
    tail -n 40 "$LOG"
    echo "[setup] pip install $* failed; full log: $LOG" >&2
    exit 1
  fi
}
pip_install --upgrade pip
echo "[setup] installing torch==2.13.0 (CPU wheel) first"
pip_install torch==2.13.0
echo "[setup] installing the project and its pinned dependencies (log: $LOG)"
pip_install -e ".[dev]"
"$VENV/bin/python" - <<'PY'
import torch, sys
v = torch.__version__
if not v.startswith("2.13.0"):
    sys.exit(f"[setup] torch was replaced by {v}; expected 2.13.0")
print(f"[setup] torch {v} ok")
PY
"$VENV/bin/python" -m pip check
"$VENV/bin/python" -m pipeline_steps.face_model  # BlazeFace model, so compute nodes need no network
echo "$want" > "$stamp"
