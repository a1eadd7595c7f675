#!/usr/bin/env bash
# The main job, locally: set up, then run the study of a preset with Snakemake and leave
# the figures under results/figures/. Extra arguments go to snakemake.
#   scripts/run.sh                      the smoke preset on 2 cores
#   PRESET=none scripts/run.sh --cores 8   the paper-scale config.yaml as it is
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh
source .venv/bin/activate
preset="${PRESET:-smoke}"
configs=()
[[ "$preset" == none ]] || configs=(--configfile "workflow/presets/$preset.yaml")
snakemake --workflow-profile workflow/profiles/local "${configs[@]}" "$@"
echo "figures: $(ls results/figures/*.pdf 2>/dev/null | tr '\n' ' ')"
