#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, CPU-only, for the launcher test: munge, slurmctld and slurmd from
# Debian's packages (apt-get install slurmctld slurmd munge), state under $1. Prints nothing on success.
#   tests/slurm/one_node.sh /tmp/slurm start|stop
set -euo pipefail
dir=$1
action=${2:-start}
host=$(hostname -s)
conf=/etc/slurm/slurm.conf
if [ "$action" = stop ]; then
  pkill -f "slurmd -f $conf" 2>/dev/null || true
  pkill -f "slurmctld -f $conf" 2>/dev/null || true
  exit 0
fi
mkdir -p "$dir/state" "$dir/spool" "$dir/log" /run/munge
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat > "$conf" <<CONF
ClusterName=digits-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
[ -s /etc/munge/munge.key ] || mungekey --create --force >/dev/null 2>&1 || dd if=/dev/urandom of=/etc/munge/munge.key bs=1k count=1 2>/dev/null
chown -R munge:munge /etc/munge /run/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c "/usr/sbin/munged" 2>/dev/null || /usr/sbin/munged --force
pgrep -f "slurmctld -f $conf" >/dev/null || slurmctld -f "$conf"
pgrep -f "slurmd -f $conf" >/dev/null || slurmd -f "$conf"
for _ in $(seq 60); do
  if sinfo -h -o %t 2>/dev/null | grep -qE "^(idle|mix|alloc)"; then exit 0; fi
  sleep 1
done
echo "slurm did not come up; see $dir/log" >&2
exit 1
