#!/usr/bin/env bash
# Stop poolrun's Slurm test cluster started by scripts/slurm/start.sh. Idempotent.
# Cancels remaining jobs, then stops only the daemons whose pid files start.sh wrote
# under $POOLRUN_SLURM_DIR/pids (and whose /proc/PID/comm matches): slurmd, slurmctld,
# and munged only if start.sh started it. Never kills anything by name.
set -euo pipefail

DIR=${POOLRUN_SLURM_DIR:-/tmp/poolrun-slurm}
PIDS=$DIR/pids
export SLURM_CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}

running() { # running PID: exists and is not an exited zombie (daemons are children of
              # PID 1, which here takes 1-2 s to reap them)
  awk '/^State:/ { z = ($2 == "Z") } /^Threads:/ { t = $2 } END { exit !(!z || t > 1) }' \
    "/proc/$1/status" 2>/dev/null
}
live() { # live NAME -> prints the pid if our pid file names a running NAME
  local pid
  pid=$(cat "$PIDS/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && running "$pid" && echo "$pid"
}

stop() { # stop NAME: SIGTERM, wait up to 10 s, then SIGKILL
  local pid
  if ! pid=$(live "$1"); then rm -f "$PIDS/$1.pid"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
  if running "$pid"; then
    echo "slurm: $1 (pid $pid) ignored SIGTERM for 10s; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDS/$1.pid"
  echo "slurm: stopped $1 (pid $pid)"
}

if live slurmctld >/dev/null; then
  jobs=$(timeout 5 squeue -h -o %A 2>/dev/null | sort -u || true)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null || true
    # let the job steps finish (KillWait=2) before slurmd goes away
    for _ in $(seq 50); do [ -z "$(timeout 2 squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.1; done
    echo "slurm: cancelled $(wc -w <<<"$jobs") job(s)"
  fi
fi

stop slurmd
stop slurmctld
stop munged

left=$(ps -eo pid=,stat=,comm= | awk '$3 == "slurmstepd" && $2 !~ /^Z/ { printf " %s", $1 }')
[ -z "$left" ] || echo "slurm: note: slurmstepd still running (not ours to kill):$left" >&2
exit 0
