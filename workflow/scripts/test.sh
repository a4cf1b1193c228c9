#!/usr/bin/env bash
# README command 2: set up the environment if needed and run the test suite.
# Extra arguments go to pytest (e.g. -k sinkhorn, -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/../.."
bash workflow/scripts/setup_env.sh
# shellcheck disable=SC1091
source .venv/bin/activate
export MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 NUMBA_CACHE_DIR="$PWD/.numba_cache"
python -m pytest "$@"
