#!/usr/bin/env bash
# Does config.yaml learn color at the paper's speed? ONE command on one GPU machine
# (issue 24; benchmarks/gpu_color_sweep.py says what it runs and writes):
#   benchmarks/gpu_color_sweep.sh OUTDIR             # CUDA GPU, at most BUDGET_S seconds
#   TINY=1 benchmarks/gpu_color_sweep.sh OUTDIR      # tiny, on this CPU, in seconds
# config.yaml's model, VDM and training; color gaps 0.4 / 0.6 / 0.8 at size gap 0.4, seeds
# 0 and 100, trained as one pack for as many steps as the time allows; the probe and the
# naive evaluations (32 samples, 50 sampler steps) on the GPU in the same call; a time
# guard that stops training so that whatever finished is gathered: study.nc, claims.json,
# README.md (T beside the paper's), checkpoints.csv (gamma_0 and the ELBO terms),
# record.tar.gz (sample sheets, logs), run.log. BUDGET_S (default 520) is the whole
# command's wall time, the wheels' install included. Wheels in .whl/ (netCDF4, cftime,
# jsonschema and its needs) are installed first where those packages are missing.
source "$(dirname "$0")/gpu_prologue.sh"  # cd to the root; $out, $started, $python
budget=$((${BUDGET_S:-520} - ($(date +%s) - started)))
if [ -n "${TINY:-}" ]; then
    # every process on one thread, one evaluation worker: the 2-core build machine
    exec "$python" benchmarks/gpu_color_sweep.py run --tiny --device cpu --out "$out" \
        --budget-s "$budget" --finish-s 30 --threads 1 --eval-workers 1 --eval-threads 1 --train-threads 1 \
        --probe-threads 1 --poll-s 0.3 ${WORK:+--work "$WORK"}
fi
exec "$python" benchmarks/gpu_color_sweep.py run --device cuda --out "$out" --budget-s "$budget" \
    ${WORK:+--work "$WORK"}
