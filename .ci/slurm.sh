#!/usr/bin/env bash
# A throw-away one-node Slurm cluster on loopback for the Slurm tests (tests/test_slurm.py).
#
#   bash .ci/slurm.sh start   installs Debian's slurm-wlm and munge if missing, starts munged,
#                             slurmctld and slurmd in a fresh temp folder, waits until the node takes
#                             jobs, and prints that folder's slurm.conf path (export it as SLURM_CONF)
#   bash .ci/slurm.sh stop CONF   stops the three daemons of that cluster (by their pid files)
#
# Best effort like .ci/postgres.sh: where Slurm cannot be installed or started, `start` prints nothing
# (the reason goes to stderr) and exits 0, and the Slurm tests skip with that reason.
# No cgroups (containers rarely allow them): processes are tracked by their parent pids
# (proctrack/linuxproc) and not bound to CPUs (task/none). No accounting database (slurmdbd): ended
# jobs are logged by jobcomp/filetxt, which `sacct -c` reads, and kept in slurmctld's memory for
# MinJobAge seconds (`scontrol show job`, `squeue -t all`).
set -euo pipefail

stop() {
  local dir
  dir=$(dirname "$1")
  for name in slurmd slurmctld munged; do
    if [ -s "$dir/$name.pid" ]; then kill "$(cat "$dir/$name.pid")" 2>/dev/null || true; fi
  done
}

fail() { echo "slurm: $*" >&2; if [ -n "${dir:-}" ]; then stop "$dir/slurm.conf"; fi; exit 0; }

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null) >&2 \
      || fail "could not install slurm-wlm and munge"
  fi
  dir=$(mktemp -d /tmp/bench-ci-slurm.XXXXXX)
  chmod 755 "$dir"
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  chmod 700 "$dir/munge"
  local host cpus mem p1 p2
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))  # MB offered to jobs: half the RAM
  read -r p1 p2 < <(python3 -c 'import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))')

  # munge: a key of our own and a private socket, so a munged already on the machine is left alone
  mungekey -c -k "$dir/munge/munge.key" >&2 || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 2>/dev/null
  chmod 400 "$dir/munge/munge.key"
  munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/seed" >&2 \
    || fail "munged did not start (see $dir/munged.log)"

  cat > "$dir/slurm.conf" <<EOF
ClusterName=benchci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$p1
SlurmdPort=$p2
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: how long a requeued job must wait before it starts again (default 120 s)
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.log
# the scheduler looks at pending jobs every 2 s (default 60): a requeued worker starts again soon
SchedulerParameters=sched_interval=2,bf_interval=2
# jobs stay visible to scontrol/squeue for 10 minutes after they end; SIGKILL 10 s after SIGTERM
MinJobAge=600
KillWait=10
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -i -f "$SLURM_CONF" >&2 || fail "slurmctld did not start (see $dir/slurmctld.log)"
  slurmd -f "$SLURM_CONF" -N "$host" >&2 || fail "slurmd did not start (see $dir/slurmd.log)"
  for _ in $(seq 60); do
    if sinfo -h -N -o '%T' 2>/dev/null | grep -qx idle; then
      echo "$SLURM_CONF"
      return
    fi
    sleep 0.5
  done
  fail "the node did not come up within 30 s: $(sinfo -N 2>&1 | tail -n 1); logs in $dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:?usage: slurm.sh stop SLURM_CONF}" ;;
  *) echo "usage: slurm.sh start | stop SLURM_CONF" >&2; exit 2 ;;
esac
