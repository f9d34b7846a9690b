#!/bin/sh
# Report whether a service's main process preloads the KSM library or has KSM on.
#   ksm_container_probe.sh SERVICE METHOD PIDFILE|- LIBRARY TIMEOUT_SECONDS
# Prints one JSON object: service, pid, pid_source, maps_library, merge_any,
# merging_pages, ld_preload (the process's LD_PRELOAD), ok, reason. Always exits 0
# unless the arguments are wrong: the caller decides whether a failure is fatal.
set -u
[ "$#" -eq 5 ] || { echo "usage: $0 SERVICE METHOD PIDFILE|- LIBRARY TIMEOUT" >&2; exit 2; }
service=$1 method=$2 pidfile=$3 library=$4 timeout=$5

json_string() {
  printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr -d '\000-\037')"
}

# The service's main PID: systemd's MainPID, else the pidfile (given, or the usual places).
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
      candidates="/run/$service.pid /var/run/$service.pid /run/$service/$service.pid /var/run/$service/$service.pid"
    fi
    for file in $candidates; do
      if [ -r "$file" ]; then
        pid=$(tr -dc '0-9' <"$file")
        pid_source="pidfile:$file"
        break
      fi
    done
  fi
  case "$pid" in ''|*[!0-9]*) pid=''; return 1 ;; esac
  [ -d "/proc/$pid" ] || { pid=''; return 1; }
  return 0
}

maps_library=false merge_any=false merging_pages=0 ld_preload='' reason=''
deadline=$(( $(date +%s) + timeout ))
while :; do
  if find_pid; then
    grep -qF "$library" "/proc/$pid/maps" 2>/dev/null && maps_library=true
    if [ -r "/proc/$pid/ksm_stat" ]; then
      grep -q '^ksm_merge_any: *yes' "/proc/$pid/ksm_stat" && merge_any=true
      merging_pages=$(sed -n 's/^ksm_merging_pages *//p' "/proc/$pid/ksm_stat")
    fi
    ld_preload=$(tr '\000' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^LD_PRELOAD=//p')
    if [ "$maps_library" = true ] || [ "$merge_any" = true ]; then
      break
    fi
    reason="pid $pid ($pid_source) neither maps $library nor has ksm_merge_any: yes"
  else
    reason="no running main process found (systemd MainPID or pidfile ${pidfile})"
  fi
  [ "$(date +%s)" -lt "$deadline" ] || break
  sleep 0.5
done

ok=false
if [ "$maps_library" = true ] || [ "$merge_any" = true ]; then ok=true; reason=''; fi
printf '{"service": %s, "method": %s, "pid": %s, "pid_source": %s, "maps_library": %s, "merge_any": %s, "merging_pages": %s, "ld_preload": %s, "ok": %s, "reason": %s}\n' \
  "$(json_string "$service")" "$(json_string "$method")" "${pid:-null}" "$(json_string "$pid_source")" \
  "$maps_library" "$merge_any" "${merging_pages:-0}" "$(json_string "$ld_preload")" "$ok" "$(json_string "$reason")"
