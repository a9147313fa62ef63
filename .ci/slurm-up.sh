#!/usr/bin/env bash
# Start a single-node SLURM on this machine for tests/cluster/test_slurm.py.
#
#   .ci/slurm-up.sh          # idempotent: does nothing when the node is already up
#
# Installs Debian's slurm-wlm and munge with apt only when they are missing, writes a
# minimal slurm.conf for this host (its node line from `slurmd -C`, everything on
# 127.0.0.1), makes sure a munge key exists, and starts munged, slurmctld and slurmd.
# Needs root and apt (Debian/Ubuntu). When it cannot bring SLURM up it prints one line on
# stderr and exits 1; `make test` goes on and the SLURM tests then skip.
#
# A slurm.conf that this script did not write (a real site's) is never touched: then the
# script only checks that SLURM answers.
set -uo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by fluoden-batch .ci/slurm-up.sh"
STATE=/var/spool/fluoden-slurm
LOG=/var/log/fluoden-slurm

fail() {
    echo "slurm-up: $*" >&2
    exit 1
}

node_up() {
    # the node answers and is ready for jobs (idle, mixed or allocated)
    local state
    state=$(timeout 10 sinfo -h -N -o %T 2>/dev/null | head -n 1)
    [[ $state =~ ^(idle|mixed|allocated|completing)$ ]]
}

alive() {
    # a daemon is alive when its pid file names a running process
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

if command -v sinfo >/dev/null && node_up; then
    exit 0
fi
[[ $(id -u) -eq 0 ]] || fail "needs root to install and start SLURM (tests that need it skip)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
    ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || fail "slurm-wlm and munge missing and no apt-get to install them"
    export DEBIAN_FRONTEND=noninteractive
    packages=(slurm-wlm munge)
    if ! apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 || fail "apt-get update failed"
        apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null 2>&1 ||
            fail "apt-get install ${packages[*]} failed"
    fi
fi

# munge: a key readable only by its user, then the daemon (as that user, as Debian runs it)
if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force >/dev/null 2>&1 ||
            fail "mungekey could not create /etc/munge/munge.key"
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none ||
            fail "could not write /etc/munge/munge.key"
    fi
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
if ! alive /run/munge/munged.pid; then
    runuser -u munge -- munged --force ||
        fail "munged did not start (see /var/log/munge/munged.log)"
fi
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munge does not work (munge -n | unmunge)"

# slurm.conf: one node, this host, reached on 127.0.0.1; no cgroups (containers lack them)
if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
    timeout 10 sinfo >/dev/null 2>&1 || fail "$CONF exists (not written here) and SLURM does not answer"
    node_up || fail "$CONF exists (not written here) and its node is not up"
    exit 0
fi
node_line=$(slurmd -C 2>/dev/null | head -n 1)
[[ $node_line == NodeName=* ]] || fail "slurmd -C did not describe this node"
host=$(hostname -s)
install -d -m 0755 /etc/slurm "$STATE/ctld" "$STATE/d" "$LOG"
conf=$(
    cat <<EOF
$MARK (single-node test cluster)
ClusterName=fluoden-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=/run/fluoden-slurmctld.pid
SlurmdPidFile=/run/fluoden-slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
MinJobAge=30
KillWait=5
InactiveLimit=0
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
if [[ ! -e $CONF ]] || [[ $(cat "$CONF") != "$conf" ]]; then
    printf '%s\n' "$conf" >"$CONF"
    # a changed configuration needs fresh daemons: stop the ones this script started
    for pidfile in /run/fluoden-slurmd.pid /run/fluoden-slurmctld.pid; do
        if alive "$pidfile"; then
            kill "$(cat "$pidfile")" 2>/dev/null
            sleep 1
        fi
    done
fi

alive /run/fluoden-slurmctld.pid || slurmctld || fail "slurmctld did not start (see $LOG/slurmctld.log)"
alive /run/fluoden-slurmd.pid || slurmd || fail "slurmd did not start (see $LOG/slurmd.log)"

for _ in $(seq 1 30); do
    if node_up; then
        exit 0
    fi
    state=$(timeout 10 sinfo -h -N -o %T 2>/dev/null | head -n 1)
    if [[ $state =~ ^(down|drain|drained|draining) ]]; then
        scontrol update nodename="$host" state=resume >/dev/null 2>&1
    fi
    sleep 1
done
fail "the node did not become idle in 30 s (sinfo: ${state:-no answer}; logs in $LOG)"
