#!/bin/sh
# Find a service's main process and check that it (and its children) opted in to KSM.
#   ksm_container_probe.sh pid    SERVICE PIDFILE|-
#       prints {"service", "pid", "pid_source"} (pid null when not running)
#   ksm_container_probe.sh verify SERVICE PIDFILE|- LIBRARY|- TIMEOUT OLD_PID|-
#       waits up to TIMEOUT seconds for a main process that is NOT OLD_PID and has opted in:
#       maps LIBRARY (/proc/PID/maps), or /proc/PID/ksm_stat says ksm_merge_any: yes (prctl,
#       MemoryKSM) or ksm_mergeable: yes (a madvise-based library such as ksm_preload, also when
#       maps is unreadable without CAP_SYS_PTRACE); every child of the main process must too.
#       Reports whether OLD_PID is still alive (a stop that left the old daemon running).
# The main PID comes from systemd (MainPID) when systemd is the running init, else from the
# given pidfile, else from the pidfile the init script or the service's own config names
# (PIDFILE=/pidfile=/pid-file/APACHE_PID_FILE), else /run/SERVICE.pid and the like.
# Prints one JSON object and exits 0 unless the arguments are wrong: the caller decides.
set -u
mode=${1:-}
case "$mode" in
  pid) [ "$#" -eq 3 ] || { echo "usage: $0 pid SERVICE PIDFILE|-" >&2; exit 2; } ;;
  verify) [ "$#" -eq 6 ] || { echo "usage: $0 verify SERVICE PIDFILE|- LIBRARY|- TIMEOUT OLD_PID|-" >&2; exit 2; } ;;
  *) echo "usage: $0 pid|verify ..." >&2; exit 2 ;;
esac
service=$2 pidfile=$3

json_string() {
  printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr -d '\000-\037')"
}

# Pidfiles named by the init script (simple assignments, $NAME-style variables expanded in a
# subshell that runs nothing else) and by the service's own configuration files.
declared_pidfiles() {
  script=/etc/init.d/$service
  if [ -r "$script" ]; then
    (
      eval "$(grep -E '^[[:space:]]*(NAME|DAEMON_NAME|SERVICE_NAME|BASENAME|INSTANCE|SUFFIX|RUNDIR|PIDDIR|PIDDIRECTORY|RUN_DIR)=[^;&|`]*$' "$script" 2>/dev/null)" 2>/dev/null
      grep -E '^[[:space:]]*(PIDFILE|PIDF|PID_FILE|pidfile|PID)=[^;&|`]*$' "$script" 2>/dev/null | while IFS= read -r line; do
        eval "$line" 2>/dev/null || continue
        for v in "${PIDFILE:-}" "${PIDF:-}" "${PID_FILE:-}" "${pidfile:-}" "${PID:-}"; do
          case "$v" in /*) echo "$v" ;; esac
        done
      done
    )
  fi
  # The service's own configuration: MariaDB/MySQL pid-file, redis pidfile, Apache's envvars.
  case "$service" in
    mysql*|mariadb*)
      for conf in /etc/mysql/my.cnf /etc/mysql/mariadb.conf.d/*.cnf /etc/mysql/conf.d/*.cnf /etc/my.cnf; do
        [ -r "$conf" ] && sed -n 's/^[[:space:]]*pid[-_]file[[:space:]]*=[[:space:]]*\(\/[^[:space:]]*\).*/\1/p' "$conf"
      done
      echo /run/mysqld/mysqld.pid ;;
    redis*)
      for conf in "/etc/redis/$service.conf" /etc/redis/redis.conf; do
        [ -r "$conf" ] && sed -n 's/^[[:space:]]*pidfile[[:space:]]\{1,\}\(\/[^[:space:]]*\).*/\1/p' "$conf"
      done ;;
  esac
  if [ -r "/etc/$service/envvars" ]; then
    (
      # shellcheck disable=SC1090
      . "/etc/$service/envvars" >/dev/null 2>&1
      [ -n "${APACHE_PID_FILE:-}" ] && echo "$APACHE_PID_FILE"
    )
  fi
}

find_pid() {
  pid='' pid_source=''
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    pid=$(systemctl show -p MainPID "$service" 2>/dev/null | sed -n 's/^MainPID=//p')
    pid_source=systemd
    [ "$pid" = 0 ] && pid=''
  fi
  if [ -z "$pid" ]; then
    if [ "$pidfile" != - ]; then
      candidates=$pidfile
    else
      candidates="$(declared_pidfiles | awk '!seen[$0]++')
/run/$service.pid /var/run/$service.pid /run/$service/$service.pid /var/run/$service/$service.pid"
    fi
    for file in $candidates; do
      if [ -r "$file" ]; then
        pid=$(head -c 64 "$file" | tr -dc '0-9')
        pid_source="pidfile:$file"
        [ -n "$pid" ] && [ -d "/proc/$pid" ] && break
        pid=''
      fi
    done
  fi
  case "$pid" in ''|*[!0-9]*) pid=''; return 1 ;; esac
  [ -d "/proc/$pid" ] || { pid=''; return 1; }
  return 0
}

if [ "$mode" = pid ]; then
  find_pid || true
  printf '{"service": %s, "pid": %s, "pid_source": %s}\n' "$(json_string "$service")" "${pid:-null}" "$(json_string "$pid_source")"
  exit 0
fi

library=$4 timeout=$5 old_pid=$6
real_library=''
[ "$library" != - ] && real_library=$(readlink -f "$library" 2>/dev/null || echo "$library")

# How process $1 opted in: maps, merge_any, mergeable (or nothing). Sets how_* variables.
opted_in() {
  how=''
  if [ -n "$real_library" ] && grep -qF "$real_library" "/proc/$1/maps" 2>/dev/null; then how=maps; fi
  if [ -r "/proc/$1/ksm_stat" ]; then
    if grep -q '^ksm_merge_any: *yes' "/proc/$1/ksm_stat"; then how="${how:+$how+}merge_any"
    elif grep -q '^ksm_mergeable: *yes' "/proc/$1/ksm_stat"; then how="${how:+$how+}mergeable"; fi
  fi
  [ -n "$how" ]
}

children_of() {
  for stat in /proc/[0-9]*/stat; do
    # field 4 of stat is the parent pid; comm (field 2) may hold spaces, so cut after ") ".
    ppid=$(sed -n 's/^.*) [A-Za-z] \([0-9]*\) .*/\1/p' "$stat" 2>/dev/null)
    [ "$ppid" = "$1" ] && { p=${stat#/proc/}; echo "${p%/stat}"; }
  done
}

ok=false reason='' how_main='' children=0 children_bad='' merging_pages=0 old_alive=false
deadline=$(( $(date +%s) + timeout ))
while :; do
  if [ "$old_pid" != - ] && [ -d "/proc/$old_pid" ] && [ "$(cut -d' ' -f3 "/proc/$old_pid/stat" 2>/dev/null)" != Z ]; then
    old_alive=true
  else
    old_alive=false
  fi
  if find_pid; then
    if [ "$old_pid" != - ] && [ "$pid" = "$old_pid" ]; then
      reason="the main process is still the old one (pid $pid, $pid_source): the restart did not replace it"
    elif opted_in "$pid"; then
      how_main=$how
      children=0 children_bad=''
      for child in $(children_of "$pid"); do
        children=$((children + 1))
        opted_in "$child" || children_bad="$children_bad $child"
      done
      merging_pages=$(sed -n 's/^ksm_merging_pages *//p' "/proc/$pid/ksm_stat" 2>/dev/null)
      if [ -n "$children_bad" ]; then
        reason="children of pid $pid without the opt-in:$children_bad"
      elif [ "$old_alive" = true ]; then
        reason="the old daemon (pid $old_pid) is still running after the restart (its stop did not end it)"
      else
        ok=true reason=''
        break
      fi
    else
      reason="pid $pid ($pid_source) neither maps ${library} nor shows ksm_merge_any: yes or ksm_mergeable: yes in /proc/$pid/ksm_stat"
    fi
  elif [ "$old_alive" = true ]; then
    reason="the old daemon (pid $old_pid) is still running and no new main process started (its stop did not end it; a second daemon cannot bind its port or lock)"
  else
    reason="no running main process found (systemd MainPID or pidfile ${pidfile}; looked in: $(declared_pidfiles | awk '!seen[$0]++' | tr '\n' ' ')/run/$service.pid ...)"
  fi
  [ "$(date +%s)" -lt "$deadline" ] || break
  sleep 0.5
done

printf '{"service": %s, "pid": %s, "pid_source": %s, "old_pid": %s, "old_alive": %s, "how": %s, "children": %s, "merging_pages": %s, "ok": %s, "reason": %s}\n' \
  "$(json_string "$service")" "${pid:-null}" "$(json_string "$pid_source")" "$( [ "$old_pid" = - ] && echo null || echo "$old_pid")" \
  "$old_alive" "$(json_string "$how_main")" "$children" "${merging_pages:-0}" "$ok" "$(json_string "$reason")"
