#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to prove the slurm profile on a real scheduler.
#   slurm_local.sh install   apt-get install slurm-wlm munge (Debian/Ubuntu, root)
#   slurm_local.sh start     munged, slurmctld, slurmd for localhost; waits for the node to be idle
#   slurm_local.sh stop      kills exactly the daemons `start` launched; removes /etc/slurm links
#   slurm_local.sh status    sinfo + squeue
# State (keys, spool, logs, pid files) lives in $SLURM_LOCAL_DIR (default /tmp/fgsd-slurm).
# No systemd and no cgroups needed. The node advertises one fake GPU (File=/dev/null) so that
# GPU requests can be scheduled; jobs must not actually use it. Facts and pitfalls: TOOLING.md §3.2.
set -euo pipefail
D="${SLURM_LOCAL_DIR:-/tmp/fgsd-slurm}"
CONF=/etc/slurm/slurm.conf   # must be here: the jobstep plugin drops SLURM_CONF inside jobs

need_root() { [ "$(id -u)" = 0 ] || { echo "slurm_local.sh: needs root (starts daemons as root)" >&2; exit 2; }; }

install() {
    need_root
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || { echo "slurm_local.sh: no apt-get: install slurm-wlm and munge yourself" >&2; exit 2; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(getconf _NPROCESSORS_ONLN)  # not nproc: it obeys OMP_NUM_THREADS
    mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 2048 ))
    cat > "$D/slurm.conf" <<EOF
ClusterName=fgsd-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$D/spool/ctld
SlurmdSpoolDir=$D/spool/d
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
MinJobAge=3600
GresTypes=gpu
NodeName=localnode NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=localnode Default=YES MaxTime=INFINITE State=UP
EOF
    echo "NodeName=localnode Name=gpu File=/dev/null" > "$D/gres.conf"
}

start() {
    need_root
    if [ -e "$CONF" ] && [ "$(readlink "$CONF")" != "$D/slurm.conf" ]; then
        echo "slurm_local.sh: $CONF exists and is not ours: is this machine already a SLURM node?" >&2
        exit 2
    fi
    rm -rf "$D/spool" "$D/log"  # a fresh cluster: no jobs left from an earlier start
    mkdir -p "$D"/munge "$D"/spool/ctld "$D"/spool/d "$D"/log /etc/slurm
    chmod 755 "$D/munge"
    if [ ! -f "$D/munge/munge.key" ]; then
        dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$D/munge/munge.key"
    fi
    write_config
    ln -sfn "$D/slurm.conf" "$CONF"
    ln -sfn "$D/gres.conf" /etc/slurm/gres.conf
    munged --force -S "$D/munge/munge.socket" --key-file="$D/munge/munge.key" \
        --pid-file="$D/munge/munged.pid" --log-file="$D/log/munged.log" --seed-file="$D/munge/munge.seed"
    slurmctld -f "$CONF"
    slurmd -f "$CONF" -N localnode
    for _ in $(seq 60); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
            echo "slurm_local.sh: node localnode is idle ($(getconf _NPROCESSORS_ONLN) CPUs, 1 fake GPU); state in $D"
            return
        fi
        sleep 0.5
    done
    echo "slurm_local.sh: the node did not become idle in 30 s; logs in $D/log" >&2
    tail -n 20 "$D"/log/*.log >&2 || true
    exit 1
}

stop() {
    local pid
    for f in "$D/slurmd.pid" "$D/slurmctld.pid" "$D/munge/munged.pid"; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$f"
    done
    [ "$(readlink "$CONF" 2>/dev/null)" = "$D/slurm.conf" ] && rm -f "$CONF"
    [ "$(readlink /etc/slurm/gres.conf 2>/dev/null)" = "$D/gres.conf" ] && rm -f /etc/slurm/gres.conf
    echo "slurm_local.sh: stopped"
}

status() {
    sinfo
    squeue -t all
}

case "${1:-}" in
    install | start | stop | status) "$1" ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
