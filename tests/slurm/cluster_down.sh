#!/usr/bin/env bash
# Stop the test cluster that tests/slurm/cluster_up.sh started in SCRATCH: cancel its
# jobs, then stop slurmd, slurmctld, slurmdbd, mariadbd and munged by the pids in their
# pid files (never by name; a pid file whose process has another name is stale and
# skipped), and remove the link /etc/slurm/slurm.conf it made. The scratch folder stays,
# with its logs; cluster_up.sh starts afresh.
#   bash tests/slurm/cluster_down.sh [SCRATCH]
set -euo pipefail

D="${1:-${CONCEPTSPACE_SLURM_DIR:-/tmp/conceptspace-slurm}}"
D="$(realpath -m "$D")"
export PATH="$PATH:/usr/sbin:/sbin"

log() { echo "cluster_down: $*" >&2; }

if [[ ! -f "$D/.conceptspace-slurm" ]]; then
    log "no test cluster in $D"
    exit 0
fi

running() { # running PIDFILE NAME -> prints the pid if it names a live NAME process
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(cat "$1")"
    [[ "$(ps -o comm= -p "$pid" 2>/dev/null)" == "$2" ]] || return 1
    echo "$pid"
}

# Jobs first: their slurmstepd processes outlive slurmd otherwise.
if [[ -f "$D/etc/slurm.conf" ]] && running "$D/run/slurmctld.pid" slurmctld >/dev/null; then
    export SLURM_CONF="$D/etc/slurm.conf"
    mapfile -t jobs < <(squeue -h -o %i 2>/dev/null || true)
    if [[ ${#jobs[@]} -gt 0 ]]; then
        log "cancelling ${#jobs[@]} job(s)"
        scancel "${jobs[@]}" 2>/dev/null || true
        for _ in $(seq 100); do
            [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break
            sleep 0.2
        done
    fi
fi

for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
    pidfile="$D/run/$daemon.pid"
    if ! pid="$(running "$pidfile" "$daemon")"; then
        [[ -e "$pidfile" ]] && log "$daemon: stale or empty pid file, skipped"
        continue
    fi
    kill -TERM "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$daemon ($pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $daemon ($pid)"
done
etc_conf=/etc/slurm/slurm.conf
if [[ -L "$etc_conf" && "$(readlink "$etc_conf")" == "$D/etc/slurm.conf" ]]; then
    rm -f "$etc_conf"
fi
