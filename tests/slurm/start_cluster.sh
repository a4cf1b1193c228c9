#!/usr/bin/env bash
# Start a private one-node SLURM cluster on this machine for the SLURM tests.
#
# Usage: bash tests/slurm/start_cluster.sh [--install] DIR
#   DIR        where the cluster lives (config, state, logs, pid files); created if missing.
#   --install  apt-get install munge, slurmctld, slurmd and slurm-client when missing
#              (needs root and apt; CI passes it, a developer's run does not).
#
# It writes DIR/etc/slurm.conf (+ gres.conf) and starts munged (own key and socket),
# slurmctld and slurmd as root, all with pid files under DIR/run, on ports that do not clash
# with a system SLURM. The node has this machine's CPUs and most of its memory, partitions
# `test-cpu` (default) and `test-gpu`, and two stand-in `gpu` gres (see gres.conf below), so
# GPU requests (--gpus, --gres=gpu:1) are accepted without a GPU. Clients find the cluster
# with `export SLURM_CONF=DIR/etc/slurm.conf PATH=DIR/bin:$PATH` (the last line printed).
# It returns once `sinfo` shows the node idle; on failure it prints why and exits non-zero
# (the daemons it started are stopped again). Stop it with tests/slurm/stop_cluster.sh DIR.
set -euo pipefail

install=0
if [[ "${1:-}" == "--install" ]]; then
    install=1
    shift
fi
dir="${1:?usage: start_cluster.sh [--install] DIR}"
here="$(cd "$(dirname "$0")" && pwd)"
ctld_port="${MTPKDOT_SLURMCTLD_PORT:-16817}"
slurmd_port="${MTPKDOT_SLURMD_PORT:-16818}"
wait_s="${MTPKDOT_SLURM_WAIT_S:-60}"

fail() {
    echo "start_cluster: $*" >&2
    exit 1
}

missing=()
for exe in munged slurmctld slurmd sbatch squeue sinfo scontrol; do
    command -v "$exe" >/dev/null || missing+=("$exe")
done
if ((${#missing[@]})); then
    ((install)) || fail "not installed: ${missing[*]} (apt-get install munge slurmctld slurmd slurm-client, or pass --install)"
    [[ "$(id -u)" == 0 ]] || fail "not installed: ${missing[*]}, and installing needs root"
    command -v apt-get >/dev/null || fail "not installed: ${missing[*]}, and there is no apt-get"
    echo "start_cluster: installing munge, slurmctld, slurmd, slurm-client with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    timeout 120 apt-get update -qq || fail "apt-get update failed or timed out"
    timeout 240 apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client \
        >/dev/null || fail "apt-get install failed or timed out"
fi
[[ "$(id -u)" == 0 ]] || fail "slurmd must run as root to launch jobs (running as $(id -un))"

mkdir -p "$dir"/{etc,run,log,munge,state/ctld,state/d}
dir="$(cd "$dir" && pwd)"
chmod 755 "$dir/munge"
if [[ -e "$dir/run/slurmctld.pid" ]] && kill -0 "$(cat "$dir/run/slurmctld.pid")" 2>/dev/null; then
    fail "a cluster already runs in $dir (stop it with stop_cluster.sh $dir)"
fi

# On any failure from here on, stop what was started and show the daemons' logs.
cleanup_on_error() {
    echo "start_cluster: failed; last daemon log lines:" >&2
    tail -n 15 "$dir"/log/*.log >&2 || true
    bash "$here/stop_cluster.sh" "$dir" >&2 || true
}
trap cleanup_on_error ERR

node="$(hostname -s)"
cpus="$(nproc)"
mem_total_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
# Leave the machine a quarter of its memory (at least 2 GB) for everything outside the jobs.
reserve_mb=$((mem_total_mb / 4 > 2048 ? mem_total_mb / 4 : 2048))
node_mem_mb=$((mem_total_mb - reserve_mb))
((node_mem_mb >= 1024)) || fail "too little memory for a node (${mem_total_mb} MB in all)"

# munge: a private key and socket, so a system munged (if any) is left alone.
if [[ ! -s "$dir/munge/munge.key" ]]; then
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
fi
chmod 400 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/run/munged.pid" --seed-file="$dir/munge/munged.seed" \
    --log-file="$dir/log/munged.log"

cat >"$dir/etc/slurm.conf" <<EOF
# Written by tests/slurm/start_cluster.sh: a private one-node test cluster.
ClusterName=mtpkdot-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state/ctld
SlurmdSpoolDir=$dir/state/d
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# No cgroups, no accounting daemon: jobs are plain processes; finished jobs are listed by
# squeue for MinJobAge seconds (an hour) and recorded one line each in the job completion log.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
MinJobAge=3600
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$node_mem_mb Gres=gpu:2 State=UNKNOWN
PartitionName=test-cpu Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=test-gpu Nodes=$node MaxTime=INFINITE State=UP
EOF
# Two stand-in GPUs: SLURM 22.05 drops a gpu gres without File= ("Removing file-less GPU"),
# so each is bound to a character device that every machine has. Nothing opens them; jobs
# only get CUDA_VISIBLE_DEVICES, which the CPU build of torch ignores.
cat >"$dir/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=$node Name=gpu File=/dev/null,/dev/zero
EOF

# Client commands that find this cluster without SLURM_CONF: Snakemake's job step drops
# every SLURM_* variable (SLURM_CONF too) before its nested `srun`, which would then look
# for /etc/slurm/slurm.conf. A site's own clients read that default file; these wrappers
# stand in for it, so `export PATH=DIR/bin:$PATH` is all a client here needs.
mkdir -p "$dir/bin"
for exe in sbatch srun squeue scancel sinfo scontrol sacct; do
    real="$(command -v "$exe")"
    printf '#!/bin/sh\nexport SLURM_CONF=%q\nexec %q "$@"\n' "$dir/etc/slurm.conf" "$real" >"$dir/bin/$exe"
    chmod 755 "$dir/bin/$exe"
done

export SLURM_CONF="$dir/etc/slurm.conf"
slurmctld -c -f "$SLURM_CONF" # -c: no jobs or node states from an earlier start
slurmd -f "$SLURM_CONF" -N "$node"

state=""
for ((i = 0; i < wait_s * 2; i++)); do
    state="$(sinfo -h -n "$node" -o %T 2>/dev/null | head -n 1 || true)"
    [[ "$state" == idle || "$state" == inval* || "$state" == drain* ]] && break
    sleep 0.5
done
trap - ERR
if [[ "$state" != idle ]]; then
    echo "start_cluster: node $node is '${state:-not listed}' after ${wait_s}s, not idle" >&2
    cleanup_on_error
    exit 1
fi
sinfo -o "%P %a %D %T %c %m %G"
echo "export SLURM_CONF=$SLURM_CONF PATH=$dir/bin:\$PATH"
