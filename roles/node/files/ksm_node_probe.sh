#!/bin/sh
# Read-only probe of a KSM node, one round trip: is the KSM sysfs writable here, is systemd the
# init, which other KSM controllers are present, which of our systemd units are enabled.
# Usage: ksm_node_probe.sh SYSFS_PATH RC_LOCAL_PATH   Prints one JSON object.
sysfs=${1:-/sys/kernel/mm/ksm}
rc_local=${2:-/etc/rc.local}
begin='# BEGIN samepage.ksm managed block'
end='# END samepage.ksm managed block'
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
LC_ALL=C
export LC_ALL

json_escape() {
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr -d '\n\r\t'
}

competing=''
add() {  # kind name detail
  item=$(printf '{"kind": "%s", "name": "%s", "detail": "%s"}' "$1" "$(json_escape "$2")" "$(json_escape "$3")")
  if [ -n "$competing" ]; then competing="$competing, $item"; else competing=$item; fi
}

# access(2) reports EROFS for a read-only /sys (unprivileged container) even for root.
writable=false
[ -w "$sysfs/run" ] && writable=true

systemd=false
[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && systemd=true

enabled_units=''
for name in ksmtuned ksm; do
  if [ "$systemd" = true ]; then
    state=$(systemctl is-enabled "$name.service" 2>/dev/null)
    active=$(systemctl is-active "$name.service" 2>/dev/null)
    case "$state:$active" in
      enabled*|*:active|*:activating) add service "$name" "systemd unit $name.service is $state, $active" ;;
    esac
  elif [ -x "/etc/init.d/$name" ]; then
    links=''
    for link in /etc/rc2.d/S*"$name" /etc/rc3.d/S*"$name" /etc/rc5.d/S*"$name"; do
      [ -e "$link" ] && links="$links$link "
    done
    if [ -n "$links" ]; then add service "$name" "init script /etc/init.d/$name starts at boot ($links)"; fi
  fi
done
if command -v pgrep >/dev/null 2>&1 && pgrep -x ksmtuned >/dev/null 2>&1; then
  case "$competing" in
    *'"name": "ksmtuned"'*) ;;
    *) add process ksmtuned "a ksmtuned process is running" ;;
  esac
fi

if [ "$systemd" = true ]; then
  for unit in samepage-ksm.service samepage-ksm-relax.service samepage-ksm-relax.timer; do
    if [ "$(systemctl is-enabled "$unit" 2>/dev/null)" = enabled ]; then
      enabled_units="$enabled_units${enabled_units:+, }\"$unit\""
    fi
  done
fi

# tuned: the active profile(s) and the directories tuned looks them up in.
if [ -r /etc/tuned/active_profile ]; then
  # active_profile holds space-separated profile names (tuned merges them): split on words.
  read -r profiles < /etc/tuned/active_profile || true
  for profile in $profiles; do
    for conf in "/etc/tuned/$profile/tuned.conf" "/usr/lib/tuned/$profile/tuned.conf" \
                "/etc/tuned/profiles/$profile/tuned.conf" "/usr/lib/tuned/profiles/$profile/tuned.conf"; do
      if [ -r "$conf" ] && grep -v '^[[:space:]]*[#;]' "$conf" | grep -q '/sys/kernel/mm/ksm'; then
        add tuned "$profile" "active tuned profile $profile writes /sys/kernel/mm/ksm ($conf)"
        break
      fi
    done
  done
fi

# rc.local lines that write the KSM knobs outside our managed block.
if [ -r "$rc_local" ]; then
  lines=$(awk -v b="$begin" -v e="$end" -v s="$sysfs" '
    $0 == b { inside = 1; next }
    $0 == e { inside = 0; next }
    !inside && $0 !~ /^[ \t]*#/ && (index($0, "/sys/kernel/mm/ksm") || index($0, s)) { printf "%s%d", sep, NR; sep = "," }
  ' "$rc_local")
  if [ -n "$lines" ]; then add rc_local "$rc_local" "$rc_local writes KSM knobs outside the samepage.ksm block (line $lines)"; fi
fi

printf '{"sysfs_writable": %s, "systemd": %s, "competing": [%s], "enabled_units": [%s]}\n' \
  "$writable" "$systemd" "$competing" "$enabled_units"
