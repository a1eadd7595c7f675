# Sourced first by the one-call GPU scripts (gpu_color_sweep.sh, gpu_pack.sh), with the
# script's arguments: from the repository root, $out = OUTDIR (made), $started (epoch
# seconds, for the budget), $python. The device machine's image has torch, numpy, xarray
# and yaml but not netCDF4, cftime or jsonschema: their wheels, carried in .whl/, are
# installed into /tmp/site where the packages are missing. Then the GPU is named.
set -uo pipefail
script="$(basename "$0")"
cd "$(dirname "$0")/.."
started=$(date +%s)
out="${1:?usage: benchmarks/$script OUTDIR}"
mkdir -p "$out"
python=${PYTHON:-python3}
if ! "$python" -c 'import netCDF4, jsonschema' 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "$script: netCDF4 or jsonschema is missing and .whl/ holds no wheels" >&2
        exit 1
    fi
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
