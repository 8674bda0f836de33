#!/usr/bin/env bash
# A single-node SLURM cluster on this machine (Debian's slurm-wlm 22.05 + munge), for CI and for trying
# `hydra/launcher=slurm` (docs/sweeps.md). Runs as root, without systemd: munge, MariaDB on loopback +
# slurmdbd (job accounting, so that `sacct` answers), slurmctld and slurmd with ProctrackType=
# proctrack/linuxproc and no cgroups, the node's real CPUs and memory. Waits until the node is idle (and
# `sacct` answers), then prints what a client needs. scripts/slurm/stop.sh stops what this started.
#
#   scripts/slurm/start.sh [--no-accounting]
#
# Environment:
#   STEERING_SLURM_ACCOUNTING  1 (default) with slurmdbd + MariaDB; 0 = --no-accounting (slurmctld without
#                              AccountingStorageType: `sacct` fails, as on clusters without accounting)
#   STEERING_SLURM_RUN         where the PID files of the daemons started here go (default /run/steering-slurm)
#   STEERING_SLURM_PARTITION   partition name (default debug)
#   STEERING_SLURM_WAIT        seconds to wait for the node (default 120)
#   STEERING_SLURM_INSTALL     1: apt-get install missing packages (default 0: .ci/run installs them)
# Switching between with and without accounting restarts slurmctld and slurmd (if this script started them).
set -euo pipefail

RUN_DIR=${STEERING_SLURM_RUN:-/run/steering-slurm}
PARTITION=${STEERING_SLURM_PARTITION:-debug}
WAIT=${STEERING_SLURM_WAIT:-120}
ACCT=${STEERING_SLURM_ACCOUNTING:-1}
[ "${1:-}" = "--no-accounting" ] && ACCT=0
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARK="# written by steering scripts/slurm/start.sh"
DB_PASS=steering-ci # a throw-away database listening on loopback only
LOGDIR=/var/log/slurm
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
t0=$(date +%s)

say() { printf '[slurm start %3ss] %s\n' "$(($(date +%s) - t0))" "$*"; }
die() {
  echo "scripts/slurm/start.sh: $*" >&2
  exit 1
}
alive() { [ -s "$RUN_DIR/$1.pid" ] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }
ours_or_absent() { [ ! -e "$1" ] || head -1 "$1" | grep -qF "$MARK"; }
# Start a daemon that writes its own PID file, and remember that PID as ours.
remember() {
  local name=$1 pidfile=$2
  for _ in $(seq 100); do [ -s "$pidfile" ] && break; sleep 0.1; done
  [ -s "$pidfile" ] || die "$name wrote no PID file ($pidfile); see $LOGDIR"
  cp "$pidfile" "$RUN_DIR/$name.pid"
}
stop_ours() {
  local pid
  alive "$1" || return 0
  pid=$(cat "$RUN_DIR/$1.pid")
  say "restarting $1 (pid $pid) for the new configuration"
  kill -TERM "$pid"
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$RUN_DIR/$1.pid"
}

[ "$(id -u)" -eq 0 ] || die "needs root (it starts system daemons)"

# --- packages ---------------------------------------------------------------------------------------------
missing=()
for bin in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/sbin/munged; do
  [ -x "$bin" ] || missing=(slurm-wlm munge)
done
if [ "$ACCT" = 1 ] && { [ ! -x /usr/sbin/slurmdbd ] || [ ! -x /usr/sbin/mariadbd ]; }; then
  missing+=(slurmdbd mariadb-server)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  [ "${STEERING_SLURM_INSTALL:-0}" = 1 ] || die "missing packages: ${missing[*]} (apt-get install them, or STEERING_SLURM_INSTALL=1)"
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p "$RUN_DIR"
install -d -o slurm -g slurm -m 0755 "$LOGDIR" /run/slurm "$STATE"
install -d -m 0755 "$SPOOL"

# --- munge ------------------------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  say "creating /etc/munge/munge.key"
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "munged answers already"
else
  say "starting munged"
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  remember munged /run/munge/munged.pid
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
  munge -n | unmunge >/dev/null || die "munged does not answer"
fi

# --- accounting: MariaDB (loopback only) + slurmdbd ---------------------------------------------------------
if [ "$ACCT" = 1 ]; then
  ours_or_absent "$DBD_CONF" || die "$DBD_CONF was not written by this script; move it away first"
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  if mariadb -e 'select 1' >/dev/null 2>&1; then
    say "MariaDB answers already"
  else
    say "starting mariadbd"
    rm -f /run/mysqld/mysqld.pid
    setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
      --pid-file=/run/mysqld/mysqld.pid --bind-address=127.0.0.1 --log-error="$LOGDIR/mariadb.err" \
      </dev/null >/dev/null 2>&1 &
    for _ in $(seq 240); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
    mariadb -e 'select 1' >/dev/null || die "MariaDB does not answer; see $LOGDIR/mariadb.err"
    remember mariadbd /run/mysqld/mysqld.pid
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat >"$DBD_CONF" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
LogFile=$LOGDIR/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chown slurm:slurm "$DBD_CONF"
  chmod 0600 "$DBD_CONF"
  if alive slurmdbd; then
    say "slurmdbd running already"
  else
    say "starting slurmdbd"
    rm -f /run/slurm/slurmdbd.pid
    /usr/sbin/slurmdbd
    remember slurmdbd /run/slurm/slurmdbd.pid
  fi
  for _ in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null && break; sleep 0.2; done
  (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null || die "slurmdbd does not listen on 6819; see $LOGDIR/slurmdbd.log"
  accounting=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\nAccountingStoragePort=6819'
else
  accounting="# no job accounting: sacct fails (--no-accounting)"
fi

# --- slurm.conf: this node's real hardware ------------------------------------------------------------------
ours_or_absent "$CONF" || die "$CONF was not written by this script; move it away first"
host=$(hostname -s)
# `slurmd -C` prints the node as slurmd will report it; slurm.conf must not claim more (the node would drain).
hardware=$(slurmd -C | head -1 | sed -n 's/^NodeName=[^ ]* \(CPUs=.*\)$/\1/p')
[ -n "$hardware" ] || die "slurmd -C printed no hardware line"
new_conf=$(
  cat <<EOF
$MARK: a one-node cluster on this machine
ClusterName=steering-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
# A requeued job (time limit with max_num_timeout) waits cred_expire seconds before it starts again (default 120).
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$accounting
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPort=6817
SlurmdPort=6818
KillWait=10
# The scheduler looks at pending jobs every 5 s (default 60): requeued and queued jobs start sooner.
SchedulerParameters=sched_interval=5,bf_interval=5
DefMemPerCPU=1024
NodeName=$host NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
if [ ! -e "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
  stop_ours slurmd
  stop_ours slurmctld
  printf '%s\n' "$new_conf" >"$CONF"
  say "wrote $CONF (node $host: $hardware)"
fi

# --- slurmctld, slurmd ----------------------------------------------------------------------------------------
for daemon in slurmctld slurmd; do
  if alive "$daemon"; then
    say "$daemon running already"
    continue
  fi
  say "starting $daemon"
  rm -f "/run/slurm/$daemon.pid"
  "/usr/sbin/$daemon" -f "$CONF"
  remember "$daemon" "/run/slurm/$daemon.pid"
done

# --- wait for the node (and for sacct) ----------------------------------------------------------------------
state=""
for _ in $(seq "$WAIT"); do
  state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
  case "$state" in idle | mixed | allocated) break ;; esac
  sleep 1
done
case "$state" in
  idle | mixed | allocated) ;;
  *)
    tail -5 "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" >&2 || true
    die "node $host is '${state:-unknown}' after ${WAIT}s"
    ;;
esac
if [ "$ACCT" = 1 ]; then
  for _ in $(seq 60); do sacct -n -X -S now >/dev/null 2>&1 && break; sleep 1; done
  sacct -n -X -S now >/dev/null || die "sacct does not answer; see $LOGDIR/slurmdbd.log"
fi
sinfo
say "cluster up ($([ "$ACCT" = 1 ] && echo "with" || echo "without") accounting); logs in $LOGDIR, PID files in $RUN_DIR"
echo "export SLURM_PARTITION=$PARTITION   # conf/hydra/launcher/slurm.yaml reads it"
