#!/usr/bin/env bash
# The paper's model on a slice of the color sweep, on one CUDA GPU, through the pipeline:
#   benchmarks/gpu_color_sweep.sh OUTDIR
# runs config.yaml with workflow/presets/gpu/paper-color-sweep.yaml over it (color gaps
# 0.4 / 0.6 / 0.8 at size gap 0.4, one seed, 4,500 steps, naive prompting; the three
# trainings share the GPU) and leaves in OUTDIR: pipeline.log (the job log, with times),
# results.tar.gz (study dataset, trajectories, figures, sample sheet, claims, job logs;
# no checkpoints), learning_times.txt (T of color and size per run, then the paper's
# values beside them). The Snakemake run is stopped after PIPELINE_LIMIT seconds (default
# 460) so that what it finished still comes back. EXTRA_CONFIG: more config files laid
# over (a tiny model and `compute.device: cpu` try the script on a CPU). Needs the
# project's packages importable.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: benchmarks/gpu_color_sweep.sh OUTDIR}"
mkdir -p "$out"
python3 -c 'import torch; print("torch", torch.__version__, "| GPU:", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
# the jobs call `python`; some images name the interpreter python3 only
if ! command -v python >/dev/null; then
    mkdir -p /tmp/pybin && ln -sf "$(command -v python3)" /tmp/pybin/python
    export PATH=/tmp/pybin:$PATH
fi
results=results/gpu-paper-color-sweep
rm -rf "$results"
started=$(date +%s)
# SIGINT: Snakemake stops its running jobs and exits (on SIGTERM it waits for them)
timeout -s INT -k 30 "${PIPELINE_LIMIT:-460}" python3 -m snakemake --cores "${CORES:-16}" --workflow-profile none --printshellcmds \
    --configfile workflow/presets/gpu/paper-color-sweep.yaml ${EXTRA_CONFIG:-} \
    --config preset=paper "results=$results" >"$out/pipeline.log" 2>&1
echo "pipeline: exit $? after $(($(date +%s) - started)) s"
grep -E "steps \([0-9]+%\) done" "$out/pipeline.log" | tail -1
# per-run training speed, from the training logs' last progress line
for log in "$results"/logs/train_vdm/signal/*.log; do
    [ -f "$log" ] && echo "$(basename "$log" .log): $(grep -E "steps/s" "$log" | tail -1)"
done
python3 - "$results" "$out/learning_times.txt" <<'PY' || true
import sys
import xarray as xr
results, out = sys.argv[1:]
study = xr.open_dataset(f"{results}/signal/study.nc").sel({"method": "naive", "size_gap": 0.4})
lines = []
for name in ("learning_time", "learning_time_concept", "learning_time_authors"):
    lines += [f"{name} (naive; NaN: not learned by the last step): {study[name].attrs.get('long_name', '')}",
              str(study[name].to_dataframe()[name].unstack("seed")), ""]
lines.append("paper (Fig. 3, color, naive): dc 0.4 ~8.0k, dc 0.6 ~4.4k, dc 0.8 ~3.3k steps")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
tar czf "$out/results.tar.gz" --exclude='*.pt' --exclude='*.npz' "$results" 2>/dev/null
ls -la "$out"
