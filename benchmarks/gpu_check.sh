#!/usr/bin/env bash
# Paper-size training on a GPU: steps/s, images/s and projected minutes per 20k-step run,
# conceptspace's training path (fp32 and bf16) against the baseline, in one run.
#   benchmarks/gpu_check.sh [out.json]          (default: benchmarks/results/gpu-<host>.json)
# Needs a CUDA GPU and the project's environment (scripts/setup.sh). About 5 minutes on
# one H100-class GPU; the CPU cases are skipped (run benchmarks/run.py for those).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && source .venv/bin/activate
out="${1:-benchmarks/results/gpu-$(hostname -s).json}"
python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check.sh: no CUDA GPU is visible; run it on a machine with one")
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, flush=True)
PY
# 200 timed steps of the paper model after 2 warm-up steps (the difference of two timed
# train_run calls cancels loading, the validation and the checkpoint). Variants: fp32
# (the default), bf16 (training.precision), compile (compute.compile, with its compile
# time), each against the DataLoader baseline; two interleaved rounds, best of each.
python benchmarks/run.py --devices cuda --skip dry_run,evaluation --paper-steps 200 \
    --small-steps 200 --threads 4 --compile --out "$out"
python benchmarks/run.py --summarize --out "$out"
