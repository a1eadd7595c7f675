#!/usr/bin/env bash
# The main job, locally: set up, then run the study of a preset with Snakemake and leave
# the figures under results/figures/. Extra arguments go to snakemake.
#   scripts/run.sh                      the cpu preset on 2 cores: the paper's claims, < 1 hour
#   PRESET=smoke scripts/run.sh         a 3-minute wiring check of every rule
#   PRESET=paper scripts/run.sh --cores 8   the paper-scale config.yaml as it is
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh
source .venv/bin/activate
# config key preset picks the scale (config.yaml); profiles/default/ is found by Snakemake
snakemake --cores 2 --config "preset=${PRESET:-cpu}" "$@"
echo "figures: $(ls results/figures/*.pdf 2>/dev/null | tr '\n' ' ')"
if [[ -f results/claims.json ]]; then python -m conceptspace claims-table results/claims.json; fi
