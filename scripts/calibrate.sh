#!/usr/bin/env bash
# One calibration candidate through the pipeline, timed, and its record written:
#   [BASE=PRESET] scripts/calibrate.sh NAME [NAME ...] [snakemake options]
# NAME is an overlay in workflow/presets/calibration/ (baseline: no change), laid over a
# preset (BASE, by default cpu-16px: the 16 px preset, base of the recorded candidates; an
# overlay's header names its base) and calibration/baseline.yaml (one run); several NAMEs
# stack, each laid over the ones before it (an overlay's header says what it builds on),
# and the candidate is named NAME+NAME. Results go to results/calibration/<candidate>/
# (which must not exist: a record times a whole run), the record to
# docs/calibration/<candidate>-<UTC date>/ (python -m conceptspace calibration-record).
# Uses the active Python environment (source .venv/bin/activate first).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
candidates="$(ls workflow/presets/calibration | sed 's/\.yaml$//' | tr '\n' ' ')"
names=()
while [[ $# -gt 0 && "$1" != -* ]]; do
    names+=("$1")
    shift
done
if [[ ${#names[@]} -eq 0 ]]; then
    echo "usage: scripts/calibrate.sh NAME [NAME ...] [snakemake options]; NAME: one of $candidates" >&2
    exit 2
fi
overlays=(workflow/presets/calibration/baseline.yaml)
for one in "${names[@]}"; do
    overlay="workflow/presets/calibration/$one.yaml"
    if [[ ! -f "$overlay" ]]; then
        echo "no candidate $overlay; the candidates are: $candidates" >&2
        exit 2
    fi
    [[ "$one" == baseline ]] || overlays+=("$overlay")
done
name="$(IFS=+; echo "${names[*]}")"
results="results/calibration/$name"
if [[ -e "$results" ]]; then
    echo "$results exists; a record times a whole run: remove it (rm -r $results) to run again" >&2
    exit 2
fi
mkdir -p "$results"
base="${BASE:-cpu-16px}"
# the base preset by config key preset (laid over config.yaml, under the overlays)
command=(snakemake --cores 2 --configfile "${overlays[@]}" --config "preset=$base" "results=$results"
         "$@")
echo "${command[*]}"
start=$(date +%s)
/usr/bin/time -v -o "$results/time.txt" "${command[@]}" 2>&1 | tee "$results/pipeline.log"
wall=$(( $(date +%s) - start ))
peak=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$results/time.txt")
python -m conceptspace calibration-record "$name" \
    --configfile config.yaml "workflow/presets/$base.yaml" "${overlays[@]}" \
    --results "$results" --out "docs/calibration/$name-$(date -u +%Y-%m-%d)" \
    --wall-seconds "$wall" --peak-rss-kib "$peak" --command "${BASE:+BASE=$BASE }scripts/calibrate.sh ${names[*]}"
