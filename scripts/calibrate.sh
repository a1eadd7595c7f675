#!/usr/bin/env bash
# One calibration candidate through the pipeline, timed, and its record written:
#   scripts/calibrate.sh NAME [snakemake options]
# NAME is an overlay in workflow/presets/calibration/ (baseline: no change), laid over the
# cpu preset (--config preset=cpu) and calibration/baseline.yaml (one run). Results go to
# results/calibration/NAME/ (which must not exist: a record times a whole run), the record
# to docs/calibration/NAME-<UTC date>/ (python -m conceptspace calibration-record).
# Uses the active Python environment (source .venv/bin/activate first).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
name="${1:?usage: scripts/calibrate.sh NAME [snakemake options]; NAME: one of $(ls workflow/presets/calibration | sed 's/\.yaml$//' | tr '\n' ' ')}"
shift
overlay="workflow/presets/calibration/$name.yaml"
if [[ ! -f "$overlay" ]]; then
    echo "no candidate $overlay; the candidates are: $(ls workflow/presets/calibration | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
    exit 2
fi
overlays=(workflow/presets/calibration/baseline.yaml)
[[ "$name" == baseline ]] || overlays+=("$overlay")
results="results/calibration/$name"
if [[ -e "$results" ]]; then
    echo "$results exists; a record times a whole run: remove it (rm -r $results) to run again" >&2
    exit 2
fi
mkdir -p "$results"
# the cpu preset by config key preset (laid over config.yaml, under the overlays)
command=(snakemake --cores 2 --configfile "${overlays[@]}" --config preset=cpu "results=$results"
         "$@")
echo "${command[*]}"
start=$(date +%s)
/usr/bin/time -v -o "$results/time.txt" "${command[@]}" 2>&1 | tee "$results/pipeline.log"
wall=$(( $(date +%s) - start ))
peak=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$results/time.txt")
python -m conceptspace calibration-record "$name" \
    --configfile config.yaml workflow/presets/cpu.yaml "${overlays[@]}" \
    --results "$results" --out "docs/calibration/$name-$(date -u +%Y-%m-%d)" \
    --wall-seconds "$wall" --peak-rss-kib "$peak" --command "scripts/calibrate.sh $name"
