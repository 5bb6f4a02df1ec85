#!/usr/bin/env bash
# Bring up poolrun's one-node Slurm test cluster (slurmctld + slurmd, munged if needed)
# on this machine, as root, without systemd. Debian 12 (Slurm 22.05). See README.md.
#
#   POOLRUN_SLURM_INSTALL=1   apt-get install the packages first          [0]
#   POOLRUN_SLURM_CPUS        CPUs the node advertises (may exceed nproc)  [8]
#   POOLRUN_SLURM_DIR         state/, log/, pids/ and jobcomp.txt          [/tmp/poolrun-slurm]
#   POOLRUN_SLURM_WAIT        seconds to wait for the node to be idle      [30]
#   SLURM_CONF                where slurm.conf is written                  [/etc/slurm/slurm.conf]
#                             (any other path must be exported for sbatch/squeue too)
#
# Every start is a fresh cluster: job state, logs and jobcomp.txt are wiped, job ids
# restart at 1. Stop with scripts/slurm/stop.sh.
set -euo pipefail

DIR=${POOLRUN_SLURM_DIR:-/tmp/poolrun-slurm}
CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
CPUS=${POOLRUN_SLURM_CPUS:-8}
WAIT=${POOLRUN_SLURM_WAIT:-30}
PIDS=$DIR/pids
NODE=$(hostname -s)
HERE=$(cd "$(dirname "$0")" && pwd)
export SLURM_CONF=$CONF

die() { echo "slurm: ERROR: $*" >&2; exit 1; }
ours() { # ours NAME: our pid file names a live (not zombie) process whose comm is NAME
  local pid
  pid=$(cat "$PIDS/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] &&
    awk '/^State:/ { z = ($2 == "Z") } /^Threads:/ { t = $2 } END { exit !(!z || t > 1) }' \
      "/proc/$pid/status" 2>/dev/null
}
node_state() { timeout 2 sinfo -h -N -n "$NODE" -o %T 2>/dev/null || true; }  # sinfo hangs ~10 s without a controller

[ "$(id -u)" = 0 ] || die "must run as root"
[[ $CPUS =~ ^[1-9][0-9]*$ ]] || die "POOLRUN_SLURM_CPUS must be a positive integer, not '$CPUS'"

if [ "${POOLRUN_SLURM_INSTALL:-0}" = 1 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    slurmctld slurmd slurm-client munge
fi
for b in munged munge unmunge mungekey slurmctld slurmd sinfo runuser; do
  command -v "$b" >/dev/null || die "$b not found; rerun with POOLRUN_SLURM_INSTALL=1"
done

T0=$EPOCHREALTIME   # startup time, install excluded

# ---- already running?
if ours slurmctld || ours slurmd; then
  st=$(node_state)
  if ours slurmctld && ours slurmd && [[ $st =~ ^(idle|mixed|allocated|completing)$ ]]; then
    echo "slurm: already up (node $NODE $st, pids $(cat "$PIDS/slurmctld.pid") $(cat "$PIDS/slurmd.pid")); nothing to do"
    exit 0
  fi
  ours slurmctld && c=up || c=down; ours slurmd && d=up || d=down
  die "half-up cluster (slurmctld $c, slurmd $d, node '${st:-unreachable}'); run $HERE/stop.sh first"
fi

# ---- fresh directories
rm -rf "$DIR/state" "$DIR/log" "$DIR/jobcomp.txt"
mkdir -p "$DIR/state/ctld" "$DIR/state/slurmd" "$DIR/log" "$PIDS" "$(dirname "$CONF")"

# ---- slurm.conf
MEM=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
OVERRIDE=""
[ "$CPUS" -gt "$(nproc)" ] && OVERRIDE="SlurmdParameters=config_overrides"
cat > "$CONF" <<CONF
# written by poolrun scripts/slurm/start.sh: one node, root daemons, no cgroups, no systemd
ClusterName=poolrun
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MailProg=/bin/true
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/slurmd
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MaxArraySize=100001
MaxJobCount=200000
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0,default_queue_depth=1000,sched_interval=5,bf_interval=5,max_rpc_cnt=0
KillWait=2
SlurmdTimeout=30
MinJobAge=600
InactiveLimit=0
ReturnToService=2
$OVERRIDE
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

# ---- munge: reuse a working munged, else start one as user munge (it forks)
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 0700 /etc/munge /var/log/munge; chmod 0600 /etc/munge/munge.key
  chmod 0755 /run/munge; chmod 0711 /var/lib/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
  munge_ok || die "munged did not start; see /var/log/munge/munged.log"
  cp /run/munge/munged.pid "$PIDS/munged.pid"   # ours: stop.sh stops it
fi

# ---- daemons (both fork and write their pid files; -c -i: start with no saved jobs)
fail() {
  echo "slurm: ERROR: $*" >&2
  tail -n 15 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 2>/dev/null || true
  "$HERE/stop.sh" >&2 || true
  exit 1
}
up() { # up NAME: alive, or its pid file is not written yet (the forked child writes it
        # a little later; allow 5 s). Daemons fork before they can fail, so check often.
  ours "$1" || { [ ! -s "$PIDS/$1.pid" ] && [ $((SECONDS - S0)) -lt 5 ]; }
}
rm -f "$PIDS/slurmctld.pid" "$PIDS/slurmd.pid"   # stale ones (checked dead above)
S0=$SECONDS
slurmctld -f "$CONF" -c -i || fail "slurmctld did not start"
slurmd -f "$CONF" -N "$NODE" || fail "slurmd did not start"

st=""
end=$((S0 + WAIT))
while [ "$SECONDS" -lt "$end" ]; do
  up slurmctld || fail "slurmctld exited"
  up slurmd || fail "slurmd exited"
  st=$(node_state)
  [ "$st" = idle ] && break
  sleep 0.2
done
[ "$st" = idle ] || fail "node $NODE is '${st:-unreachable}' after ${WAIT}s"
awk -v n="$NODE" -v t0="$T0" -v t1="$EPOCHREALTIME" -v c="$CPUS" \
  'BEGIN { printf "slurm: node %s idle after %.1fs (%s CPUs)\n", n, t1 - t0, c }'
