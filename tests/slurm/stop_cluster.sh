#!/usr/bin/env bash
# Stop the test cluster that tests/slurm/start_cluster.sh started in DIR.
#
# Usage: bash tests/slurm/stop_cluster.sh DIR
# Cancels the cluster's jobs, then ends exactly the daemons named by DIR/run/*.pid (slurmd,
# slurmctld, munged), each only if that pid still runs that program. Other SLURM or munge
# daemons on the machine are left alone. DIR itself (logs, job completion log) is kept.
set -uo pipefail

dir="${1:?usage: stop_cluster.sh DIR}"
[[ -d "$dir" ]] || exit 0
export SLURM_CONF="$dir/etc/slurm.conf"

if [[ -e "$dir/run/slurmctld.pid" ]]; then
    timeout 10 scancel --full --user="$(id -un)" 2>/dev/null || true
fi

stop_daemon() { # name: the pid file's stem and the program that must own the pid
    local name="$1" pidfile="$dir/run/$1.pid" pid
    [[ -s "$pidfile" ]] || return 0
    pid="$(cat "$pidfile")"
    if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]]; then
        rm -f "$pidfile" # stale: that pid is gone or now another program
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "stop_cluster: $name ($pid) did not stop in 10 s; killing it" >&2
        kill -KILL "$pid"
    fi
    rm -f "$pidfile"
}

stop_daemon slurmd
stop_daemon slurmctld
stop_daemon munged
