#!/usr/bin/env bash
# The GPU checks, in one run on a machine with a CUDA GPU:
#   1. training speed of the paper-size model and the cpu preset's model on CUDA:
#      conceptspace in fp32 (the default), bf16 (training.precision) and compile
#      (compute.compile, with its compile time) against the DataLoader baseline;
#      steps/s, images/s and projected minutes per full run;
#   2. evaluation of one checkpoint with every method against naive prompting alone;
#   3. a short real training: the cpu preset's whole study on the GPU with Snakemake
#      (5 runs, each evaluated at its 16 checkpoints, figures, claims), timed.
#
#   benchmarks/gpu_check.sh [OUTDIR]        (default: benchmarks/results/gpu-<host>)
#
# OUTDIR gets evaluation.json and training.json (parts 1-2, written after every
# measurement), pipeline.log, claims.json and pipeline_results.tar.gz (study datasets,
# figures). Each part runs under its own time limit in seconds (EVAL_LIMIT, TRAIN_LIMIT,
# PIPELINE_LIMIT), so a slow part cannot take the others' time; a part stopped by its
# limit keeps what it measured. Needs the project's packages importable (scripts/setup.sh,
# or any environment with them).
set -uo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && source .venv/bin/activate
out="${1:-benchmarks/results/gpu-$(hostname -s)}"
mkdir -p "$out"
python - <<'PY' || exit 1
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check.sh: no CUDA GPU is visible; run it on a machine with one")
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, flush=True)
PY
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv || true

# 1-2. The evaluations, then one training measurement per case after a warm-up call (the
# difference of two timed train_run calls cancels loading, the validation and the
# checkpoint); the compile cases last. GPU timings do not share the machine: one round.
bench=(python benchmarks/run.py --devices cuda --repeats 1 --threads 4)
timeout "${EVAL_LIMIT:-120}" "${bench[@]}" --skip training,dry_run --out "$out/evaluation.json"
echo "evaluation benchmark: exit $?"
timeout "${TRAIN_LIMIT:-240}" "${bench[@]}" --skip evaluation,dry_run --compile \
    --paper-steps 300 --small-steps 500 --out "$out/training.json"
echo "training benchmark: exit $?"
for part in evaluation training; do
    [ -f "$out/$part.json" ] && python benchmarks/run.py --summarize --out "$out/$part.json"
done

# 3. The cpu preset on the GPU: every job on CUDA, 16 jobs at a time.
overlay=$(mktemp --suffix .yaml)
printf 'compute:\n  device: cuda\n' >"$overlay"
started=$(date +%s)
timeout "${PIPELINE_LIMIT:-300}" snakemake \
    --configfile workflow/presets/cpu-16px.yaml "$overlay" --cores 16 >"$out/pipeline.log" 2>&1
echo "pipeline: exit $? after $(($(date +%s) - started)) s"
grep -E "steps \([0-9]+%\) done" "$out/pipeline.log" | tail -1
if [ -f results/claims.json ]; then
    cp results/claims.json "$out/claims.json"
    python -m conceptspace claims-table results/claims.json
fi
# what the run gathered, for a look elsewhere: study datasets, figures, claims
tar czf "$out/pipeline_results.tar.gz" results/*/study.nc results/figures results/claims.json \
    2>/dev/null || true
