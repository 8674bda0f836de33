#!/usr/bin/env bash
# Stop what scripts/slurm/start.sh started: cancel the queue's jobs, then end slurmd, slurmctld, slurmdbd,
# mariadbd and munged, each only if start.sh recorded its PID and that PID is still that program (PIDs are
# reused). Nothing is ended by name; daemons start.sh found running are left alone.
#   scripts/slurm/stop.sh [--purge]   --purge: also remove the cluster's state, logs, accounting database
#                                     and the conf files start.sh wrote (packages stay installed)
set -uo pipefail

RUN_DIR=${STEERING_SLURM_RUN:-/run/steering-slurm}
MARK="# written by steering scripts/slurm/start.sh"
purge=0
[ "${1:-}" = "--purge" ] && purge=1

say() { echo "[slurm stop] $*"; }

# The recorded PID of <name>, if that process still runs the program <name> (Debian calls some <name>-wlm).
ours() {
  local file=$RUN_DIR/$1.pid pid exe
  [ -s "$file" ] || return 1
  pid=$(cat "$file")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  case "$(basename "$exe")" in "$1" | "$1"-wlm) echo "$pid" ;; *) return 1 ;; esac
}

stop() {
  local pid
  if pid=$(ours "$1"); then
    say "stopping $1 (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$1 (pid $pid) still running after 30 s: SIGKILL"
      kill -KILL "$pid"
    fi
  fi
  rm -f "$RUN_DIR/$1.pid"
}

# Jobs first: their processes would outlive slurmd.
if ours slurmctld >/dev/null; then
  jobs=$(timeout 20 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    say "cancelling jobs $jobs"
    # shellcheck disable=SC2086
    timeout 20 scancel $jobs || true
    for _ in $(seq 30); do
      [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ] && break
      sleep 1
    done
  fi
fi
stop slurmd
stop slurmctld
stop slurmdbd
if [ "$purge" = 1 ] && ours mariadbd >/dev/null; then
  mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db" || true
fi
stop mariadbd
stop munged
if [ "$purge" = 1 ]; then
  say "removing the cluster's state, logs and conf files"
  rm -rf /var/spool/slurmctld /var/spool/slurmd
  rm -f /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log /var/log/slurm/slurmdbd.log /var/log/slurm/mariadb.err
  for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
    if [ -e "$f" ] && head -1 "$f" | grep -qF "$MARK"; then rm -f "$f"; fi
  done
fi
exit 0
