#!/usr/bin/env bash
# README command 1: set up the environment if needed, generate the demo dataset and run the
# whole pipeline with Snakemake on the local cores. Extra arguments go to snakemake.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash workflow/scripts/setup_env.sh
# shellcheck disable=SC1091
source .venv/bin/activate
export MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 NUMBA_CACHE_DIR="$PWD/.numba_cache"
start=$(date +%s)
snakemake --cores "${CORES:-all}" "$@"
echo
for report in results/*/report.md; do
  echo "== $report"
  cat "$report"
done
echo "Results table: $(ls results/*/report.csv | tr '\n' ' ')(Markdown: results/*/report.md)"
echo "Pipeline wall time: $(( $(date +%s) - start )) s"
echo "Browse the runs: .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000"
echo "  then open http://127.0.0.1:5000"
