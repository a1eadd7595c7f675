#!/usr/bin/env bash
# Install what tests/slurm/cluster_up.sh needs (Debian/Ubuntu, as root): munge, Slurm's
# controller, node daemon, clients and accounting daemon, and MariaDB for accounting.
# Idempotent: apt-get runs only when a command is missing. Daemons are not started (a
# temporary policy-rc.d keeps the packages' init scripts from starting them, unless the
# machine already has one); cluster_up.sh starts its own, under a scratch folder.
#   sudo bash tests/slurm/install.sh
set -euo pipefail

# command -> Debian package that provides it
declare -A needed=(
    [munged]=munge
    [slurmctld]=slurmctld
    [slurmd]=slurmd
    [sbatch]=slurm-client
    [slurmdbd]=slurmdbd
    [mariadbd]=mariadb-server
    [mariadb]=mariadb-client
)
missing=()
for command in "${!needed[@]}"; do
    if ! command -v "$command" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$command" ]]; then
        missing+=("${needed[$command]}")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "slurm install: everything is already installed"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "slurm install: missing ${missing[*]}; run this script as root" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    made_policy=1
fi
cleanup() {
    if [[ $made_policy -eq 1 ]]; then
        rm -f "$policy"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
echo "slurm install: apt-get install ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "slurm install: done"
