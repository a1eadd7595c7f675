#!/usr/bin/env bash
# The packs on a GPU, in ONE command of at most BUDGET_S seconds (default 470; issue 27):
#   benchmarks/gpu_pack.sh OUTDIR                 # CUDA GPU
#   TINY=1 benchmarks/gpu_pack.sh OUTDIR          # tiny, on this CPU, a wiring check
# Two calls of benchmarks/gpu_pack.py, which says what each case measures:
#   OUTDIR/train.json   the pack trainer's step: the paper's and the cpu preset's model,
#                       fp32, TF32 and bf16, K = 1, 4, 16, 64, vmapped, then the same with
#                       CUDA graphs (mode graphs), as far as 60% of the budget reaches;
#   OUTDIR/sample.json  the pack evaluator's sampler step, fp32 and TF32, at 512 and 2,048
#                       rows per call (evaluation.batch_size: the config's, and what a
#                       pack of 4 needs for one call per checkpoint), the rest of it.
# K = 1 is today's one run per process, measured in the same call. Each report is
# rewritten after every case, so a stopped call keeps what it measured. Wheels in .whl/
# (netCDF4, cftime, jsonschema and its needs) are installed first where those are missing.
source "$(dirname "$0")/gpu_prologue.sh"  # cd to the root; $out, $started, $python
left=$((${BUDGET_S:-470} - ($(date +%s) - started)))
if [ -n "${TINY:-}" ]; then
    common=(--tiny --device cpu --packs 1 4 --threads 1 --steps 2 --warmup 1)
    rows=(--sample-rows 8 32)
else
    common=(--device cuda)
    rows=(--sample-rows 512 2048)
fi
# no case starts after its budget; the case running then still ends: keep a margin
"$python" benchmarks/gpu_pack.py "${common[@]}" --modes vmap graphs \
    --budget-s $((left * 6 / 10 - 40)) --out "$out/train.json"
echo "train stage: exit $?"
left=$((${BUDGET_S:-470} - ($(date +%s) - started)))
"$python" benchmarks/gpu_pack.py "${common[@]}" --stage sample "${rows[@]}" --modes vmap graphs \
    --budget-s $((left - 60)) --out "$out/sample.json"
echo "sample stage: exit $?"
