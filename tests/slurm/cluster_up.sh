#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests: munged, MariaDB, slurmdbd
# (accounting, so that `sacct` answers, as on real clusters), slurmctld and slurmd, with
# two fake GPUs (gres) so that GPU requests schedule. Needs root and the packages of
# tests/slurm/install.sh; no systemd, no cgroups.
#
#   bash tests/slurm/cluster_up.sh [SCRATCH]     (default $CONCEPTSPACE_SLURM_DIR or
#                                                 /tmp/conceptspace-slurm)
#   source SCRATCH/env                           clients (sbatch, sacct, snakemake) now
#                                                 talk to this cluster
#   bash tests/slurm/cluster_down.sh [SCRATCH]   stops what this script started, by pid
#
# Everything lives under SCRATCH: configuration (SLURM_CONF points there), munge key and
# socket, the MariaDB data folder, Slurm state, spool, logs and pid files. The one thing
# outside is a link /etc/slurm/slurm.conf -> SCRATCH/etc/slurm.conf, for the srun inside
# jobs, made only where the machine has no Slurm configuration (cluster_down.sh removes
# it). Ports are settings (SLURM_TEST_{CTLD,SLURMD,DBD,DB}_PORT) so that the cluster does
# not collide with anything the machine runs. Running it again while it is up does nothing.
#
# The node advertises SLURM_TEST_CPUS CPUs (default: the machine's, at least 16) and
# SLURM_TEST_MEMORY_MB of memory (default 65536; SlurmdParameters=config_overrides), so
# that the rules' requests, sized for cluster nodes, and packed jobs (several trainings
# asking for their CPUs together) schedule here; without cgroups nothing enforces them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
D="${1:-${CONCEPTSPACE_SLURM_DIR:-/tmp/conceptspace-slurm}}"
D="$(realpath -m "$D")"
ctld_port="${SLURM_TEST_CTLD_PORT:-16817}"
slurmd_port="${SLURM_TEST_SLURMD_PORT:-16818}"
dbd_port="${SLURM_TEST_DBD_PORT:-16819}"
db_port="${SLURM_TEST_DB_PORT:-13306}"
memory_mb="${SLURM_TEST_MEMORY_MB:-65536}"
gpus="${SLURM_TEST_GPUS:-2}"
marker="$D/.conceptspace-slurm"

log() { echo "cluster_up: $*" >&2; }
die() {
    log "$*"
    exit 1
}

alive() { # alive PIDFILE NAME: the pid file names a running process called NAME
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(cat "$1")"
    [[ "$(ps -o comm= -p "$pid" 2>/dev/null)" == "$2" ]]
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.2 s
    local seconds="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + seconds))
    while ((SECONDS < deadline)); do
        if timeout 5 "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    die "$what did not come up within ${seconds}s; logs in $D/log, $D/munge, $D/mysql"
}

[[ $(id -u) -eq 0 ]] || die "needs root (the daemons run as root, munged as munge)"
for command in munged mungekey slurmctld slurmd slurmdbd mariadbd mariadb-install-db sbatch; do
    command -v "$command" >/dev/null 2>&1 || [[ -x "/usr/sbin/$command" ]] ||
        die "$command is missing: run tests/slurm/install.sh first"
done
export PATH="$PATH:/usr/sbin:/sbin"

if [[ -f "$marker" ]] && alive "$D/run/munged.pid" munged && alive "$D/run/mariadbd.pid" mariadbd &&
    alive "$D/run/slurmdbd.pid" slurmdbd && alive "$D/run/slurmctld.pid" slurmctld &&
    alive "$D/run/slurmd.pid" slurmd; then
    log "already up in $D"
    exit 0
fi
if [[ -f "$marker" ]]; then
    log "stopping what is left of an earlier cluster in $D"
    bash "$here/cluster_down.sh" "$D"
    find "$D" -mindepth 1 -delete
elif [[ -e "$D" && -n "$(ls -A "$D")" ]]; then
    die "$D is not empty and was not made by this script; choose another folder"
fi

started=$SECONDS
node="$(hostname -s)"
cpus="${SLURM_TEST_CPUS:-$(($(nproc) > 16 ? $(nproc) : 16))}"
mkdir -p "$D"/{etc,run,log,state,spool,dev}
touch "$marker"
for ((i = 0; i < gpus; i++)); do
    : >"$D/dev/fakegpu$i"
done

# --- munge: own key and socket
install -d -o munge -g munge -m 0755 "$D/munge"
mungekey --create --keyfile="$D/munge/munge.key" --force
chown munge:munge "$D/munge/munge.key"
chmod 0400 "$D/munge/munge.key"
socket="$D/munge/munge.socket"
# munged writes its pid file itself; it lives in the munge-owned folder and is linked.
runuser -u munge -- munged --socket="$socket" --key-file="$D/munge/munge.key" \
    --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" \
    --seed-file="$D/munge/munged.seed"
ln -sf "$D/munge/munged.pid" "$D/run/munged.pid"
wait_for 10 munged bash -c "munge -n --socket='$socket' | unmunge --socket='$socket'"

# --- MariaDB for slurmdbd, on 127.0.0.1:$db_port
install -d -o mysql -g mysql -m 0750 "$D/mysql"
mariadb-install-db --no-defaults --user=mysql --datadir="$D/mysql/data" \
    --auth-root-authentication-method=socket >"$D/log/mariadb-install.log" 2>&1 ||
    die "mariadb-install-db failed; see $D/log/mariadb-install.log"
setsid mariadbd --no-defaults --user=mysql --datadir="$D/mysql/data" \
    --socket="$D/mysql/mysqld.sock" --pid-file="$D/mysql/mysqld.pid" \
    --port="$db_port" --bind-address=127.0.0.1 --innodb-buffer-pool-size=64M \
    --log-error="$D/mysql/mariadb.log" </dev/null >/dev/null 2>&1 &
ln -sf "$D/mysql/mysqld.pid" "$D/run/mariadbd.pid"
sql=(mariadb --no-defaults --socket="$D/mysql/mysqld.sock" -u root)
wait_for 30 MariaDB "${sql[@]}" -e "SELECT 1"
db_password="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"${sql[@]}" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_password';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$db_password';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# --- Slurm configuration (SLURM_CONF; gres.conf and slurmdbd.conf beside it)
cat >"$D/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$socket
DbdHost=localhost
DbdPort=$dbd_port
SlurmUser=root
LogFile=$D/log/slurmdbd.log
PidFile=$D/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=$db_password
StorageLoc=slurm_acct_db
EOF
chmod 0600 "$D/etc/slurmdbd.conf"

cat >"$D/etc/slurm.conf" <<EOF
ClusterName=conceptspace
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
DefMemPerCPU=1000
ReturnToService=2
MinJobAge=300
KillWait=5
JobRequeue=1
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
AccountingStoragePass=$socket
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb Gres=gpu:$gpus State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
EOF
{
    echo "AutoDetect=off"
    for ((i = 0; i < gpus; i++)); do
        echo "NodeName=$node Name=gpu File=$D/dev/fakegpu$i"
    done
} >"$D/etc/gres.conf"
export SLURM_CONF="$D/etc/slurm.conf"
# Clients find the cluster through SLURM_CONF, except the `srun` that the plugin's job step
# runs inside each job: it drops every SLURM_* variable but a few (plugin 0.6.1), so it
# reads the default /etc/slurm/slurm.conf. Link that to ours when it is free.
etc_conf=/etc/slurm/slurm.conf
if [[ -L "$etc_conf" && "$(readlink "$etc_conf")" != "$SLURM_CONF" ]]; then
    # Another test cluster's link: replace it when that cluster is gone.
    other="$(dirname "$(dirname "$(readlink "$etc_conf")")")"
    if [[ -f "$other/.conceptspace-slurm" ]] && alive "$other/run/slurmctld.pid" slurmctld; then
        die "another test cluster is up in $other; stop it: tests/slurm/cluster_down.sh $other"
    fi
    if [[ ! -e "$etc_conf" || -f "$other/.conceptspace-slurm" ]]; then
        rm -f "$etc_conf"
    fi
fi
if [[ -e "$etc_conf" && "$(readlink "$etc_conf")" != "$SLURM_CONF" ]]; then
    die "$etc_conf exists: this machine has its own Slurm; run the tests elsewhere"
fi
mkdir -p /etc/slurm
ln -sfn "$SLURM_CONF" "$etc_conf"
cat >"$D/env" <<EOF
# source this file to talk to the test cluster in $D
export SLURM_CONF=$SLURM_CONF
EOF

# --- daemons: slurmdbd, then slurmctld, then slurmd
slurmdbd
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster conceptspace >/dev/null 2>&1 || true
slurmctld
wait_for 30 slurmctld scontrol ping
slurmd
wait_for 30 "an idle node" bash -c "sinfo -h -o %T | grep -qx idle"
# sacct answers from slurmdbd once slurmctld has registered with it
wait_for 30 "accounting" sacct -n -X --starttime now-1minute

log "up in $D in $((SECONDS - started)) s: node $node, $cpus CPUs, ${memory_mb} MB," \
    "$gpus fake GPUs; partitions cpu (default) and gpu"
log "pids: munged $(cat "$D/run/munged.pid") mariadbd $(cat "$D/run/mariadbd.pid")" \
    "slurmdbd $(cat "$D/run/slurmdbd.pid") slurmctld $(cat "$D/run/slurmctld.pid")" \
    "slurmd $(cat "$D/run/slurmd.pid")"
log "to use it: source $D/env"
