#!/usr/bin/env bash
# Make .venv with everything conceptspace needs; fast when it is already there.
# Sourced by run.sh and test.sh; safe to run on its own.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
python="${PYTHON:-python3}"
# torch and torchvision are pinned: 2.14.1 / 0.29.1 lie on these machines' disks, and
# torchvision fails to import beside torch 2.13.0.
torch_pins=(torch==2.14.1 torchvision==0.29.1)

stamp="$venv/.conceptspace-installed"
wanted="$(cat "$repo/pyproject.toml" "$repo/scripts/setup.sh" | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    exit 0
fi
echo "setup: installing into $venv (first run takes a few minutes)" >&2
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "${torch_pins[@]}"
"$venv/bin/python" -m pip install --quiet -e "$repo[dev]" "${torch_pins[@]}"
echo "$wanted" > "$stamp"
echo "setup: done" >&2
