#!/usr/bin/env bash
# GPU check (issue 17 item 4), one short run (< 8 min on one GPU):
#   1. the CUDA-marked tests (pytest -m cuda);
#   2. the Sinkhorn and student-step benchmarks on CUDA (geomloss on CUDA as the reference);
#   3. one fold of the BioVid demo DAG with run.device: cuda and run.amp: true, sampling
#      nvidia-smi while the students train: GPU utilisation, and whether the input side keeps
#      the GPU busy.
# Without a CUDA device (or with --cpu-smoke) it runs only its CPU-safe parts: the CUDA tests
# are collected and skipped, the benchmarks run on the CPU at tiny sizes, and the fold's DAG is
# planned (snakemake --dry-run) with run.device: cpu. The suite's smoke test runs that mode.
#
#   benchmarks/gpu_check.sh [--cpu-smoke] [--keep]    # --keep: keep the DAG's work folder
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python}
MODE=gpu
KEEP=0
for arg in "$@"; do
    case $arg in
    --cpu-smoke) MODE=cpu ;;
    --keep) KEEP=1 ;;
    *) echo "usage: $0 [--cpu-smoke] [--keep]" >&2 && exit 2 ;;
    esac
done
if [[ $MODE == gpu ]] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check: no CUDA device visible to torch: running the CPU-safe parts (--cpu-smoke)"
    MODE=cpu
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
export PATH="$(dirname "$(command -v "$PY")"):$PATH"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
SAMPLER=""
cleanup() {
    [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null || true
    if [[ $KEEP == 1 ]]; then echo "gpu_check: work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
START=$SECONDS
section() { echo; echo "=== [$((SECONDS - START)) s] $*"; }

section "mode $MODE; $("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)')"
if [[ $MODE == gpu ]]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi

section "1. CUDA-marked tests"
mapfile -t CUDA_TESTS < <(grep -l "mark.cuda" tests/test_*.py)
echo "files with CUDA-marked tests: ${CUDA_TESTS[*]}"
"$PY" -m pytest -m cuda -q -p no:cacheprovider -rs "${CUDA_TESTS[@]}"

section "2. benchmarks on $MODE"
if [[ $MODE == gpu ]]; then
    "$PY" benchmarks/bench_sinkhorn.py --device cuda --sizes 128 512 --repeats 10 --budget 5
    "$PY" benchmarks/bench_student_step.py --device cuda --repeats 20 --frame-repeats 3
else
    "$PY" benchmarks/bench_sinkhorn.py --device cpu --threads 1 --sizes 12 --dim 4 --iters 5 \
        --repeats 2 --budget 1
    "$PY" benchmarks/bench_student_step.py --device cpu --batch 8 --dim 16 --topk 3 \
        --repeats 2 --frames 4 --size 32 --width 4 --frame-repeats 1
fi

section "3. one fold of the BioVid demo DAG, run.device: $([[ $MODE == gpu ]] && echo cuda || echo cpu), run.amp: true"
"$PY" - "$REPO/params.yaml" "$WORK/params.yaml" "$MODE" <<'EOF'
import sys

import yaml

src, dst, mode = sys.argv[1:]
params = yaml.safe_load(open(src))
params["run"].update(datasets=["biovid"], device="cuda" if mode == "gpu" else "cpu", amp=True)
params["index_dataset"]["loso"] = False
yaml.safe_dump(params, open(dst, "w"), sort_keys=False)
EOF
# fold 0's inputs of the students (phase A), then its students and their evaluation (phase B)
mapfile -t TARGETS < <("$PY" - "$WORK/params.yaml" <<'EOF'
import sys

from pipeline_steps.config import load_params
from pipeline_steps.layout import layout_for

params = load_params(sys.argv[1])
layout = layout_for(params, "biovid")
print("A", layout.embeddings(0, "video"))
print("A", layout.pool_outputs(0))
for method in params["train_student"]["methods"]:
    print("B", layout.evaluation(0, method, params["run"]["seeds"][0]))
EOF
)
PHASE_A=() PHASE_B=()
for t in "${TARGETS[@]}"; do
    if [[ $t == A\ * ]]; then PHASE_A+=("${t#A }"); else PHASE_B+=("${t#B }"); fi
done
smk() {
    MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" snakemake "$@" --snakefile "$REPO/Snakefile" \
        --directory "$WORK" --configfile "$WORK/params.yaml" --cores "$(nproc)" \
        --resources gpu=1 --quiet rules
}
if [[ $MODE == cpu ]]; then
    smk --dry-run "${PHASE_A[@]}" "${PHASE_B[@]}"
    echo "gpu_check: DAG planned (dry run); students' GPU utilisation needs a CUDA machine"
else
    smk "${PHASE_A[@]}"
    section "students of fold 0 with nvidia-smi sampling every 200 ms"
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits \
        -lms 200 >"$WORK/gpu_util.csv" &
    SAMPLER=$!
    T0=$SECONDS
    smk "${PHASE_B[@]}"
    kill "$SAMPLER" 2>/dev/null || true
    SAMPLER=""
    echo "students + evaluation: $((SECONDS - T0)) s wall"
    "$PY" - "$WORK/gpu_util.csv" <<'EOF'
import statistics
import sys

rows = []
for line in open(sys.argv[1]):
    parts = [p.strip() for p in line.split(",")]
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        rows.append((int(parts[0]), int(parts[1])))
if not rows:
    sys.exit("gpu_check: nvidia-smi gave no samples")
util = [u for u, _ in rows]
busy = sum(u > 0 for u in util) / len(util)
mean = statistics.mean(util)
print(
    f"GPU utilisation over {len(util)} samples: mean {mean:.0f}%, median "
    f"{statistics.median(util):.0f}%, max {max(util)}%, non-zero in {busy:.0%} of samples; "
    f"memory used up to {max(m for _, m in rows)} MiB"
)
if mean >= 60:
    print("verdict: the input side keeps the GPU busy")
else:
    print(
        "verdict: the GPU waits most of the time: the jobs are bound by start-up, data loading "
        "or host work at these demo sizes (see the logs' benchmark TSVs)"
    )
EOF
    for log in "$WORK"/logs/biovid/fold0/seed*/train_student-*.log; do
        echo "--- $log"
        tail -n 3 "$log"
    done
    "$PY" benchmarks/bench_pipeline.py "$WORK/logs" || true
fi

section "gpu_check done in $((SECONDS - START)) s (mode $MODE)"
