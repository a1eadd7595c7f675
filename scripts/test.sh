#!/usr/bin/env bash
# The whole test suite: set up, then pytest (unit tests, formatting and lint checks, and
# the smoke preset end to end through Snakemake). Extra arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh
source .venv/bin/activate
exec python -m pytest "$@"
