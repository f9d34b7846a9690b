#!/usr/bin/env bash
# Smoke test of the built images (tests/images/build.sh first). Fails on the first broken promise.
#   tests/images/check.sh
# For the sysv and systemd images: boot a container, check ksm-demo runs without KSM opt-in,
# fetch ksm_preload download-only (dnf install --downloadonly and dnf download) from
# file:///srv/samepage-repo, install it with rpm -i --nodeps, check the dependency RPM is NOT
# installed, restart ksm-demo with LD_PRELOAD and read /proc/<host pid>/ksm_stat from the host.
# For the fleet image: sshd config test, python3 and sudo present. For the stack image: the real
# services start, and the real ksm_preload RPM installs alone (see stack()).
# Never touches /sys/kernel/mm/ksm (ksm_stat is per process). Removes every container it starts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/tests/podman/containers.conf}
prefix=samepage-images-check-$$
started=()

started_dirs=()

cleanup() {
  local c
  for c in "${started[@]}"; do podman rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
  for c in "${started_dirs[@]}"; do rm -rf "$c"; done
}
trap cleanup EXIT

fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf 'ok: %s\n' "$*"; }

# Host pid of the container's ksm-demo (the pid in /run/ksm-demo.pid is the container's view).
host_pid_of_demo() {
  local c=$1 nspid p
  nspid=$(podman exec "$c" cat /run/ksm-demo.pid)
  for p in $(pgrep -x ksm-demo); do
    if [ "$(awk '/^NSpid/ {print $NF}' "/proc/$p/status")" = "$nspid" ] \
      && [ "$(stat -L -c %i "/proc/$p/ns/pid")" = "$(stat -L -c %i "/proc/$(podman inspect -f '{{.State.Pid}}' "$c")/ns/pid")" ]; then
      echo "$p"; return 0
    fi
  done
  return 1
}

merge_any() { awk -F': ' '/^ksm_merge_any/ {print $2}' "/proc/$1/ksm_stat"; }

check_rpm_flow() {
  local c=$1
  podman exec "$c" sh -ec '
    rm -rf /tmp/dl /tmp/dl2; mkdir -p /tmp/dl2
    dnf install -y -q --downloadonly --downloaddir=/tmp/dl ksm_preload >/dev/null 2>&1
    test -f /tmp/dl/ksm_preload-0.10-3.samepage.x86_64.rpm
    cd /tmp/dl2 && dnf download -q ksm_preload >/dev/null 2>&1
    test -f /tmp/dl2/ksm_preload-0.10-3.samepage.x86_64.rpm
    ! rpm -q ksm_preload >/dev/null
    rpm -i --nodeps /tmp/dl/ksm_preload-0.10-3.samepage.x86_64.rpm 2>/dev/null
    rpm -q ksm_preload >/dev/null
    test -f /usr/lib64/libksm_preload.so
    ! rpm -q ksm_preload-dependency-stream >/dev/null' \
    || fail "$c: download-only + rpm -i --nodeps flow"
  ok "$c: dnf --downloadonly, dnf download, rpm -i --nodeps; dependency RPM not installed"
}

check_demo() {
  local c=$1 how=$2 pid
  pid=$(host_pid_of_demo "$c") || fail "$c: ksm-demo not running"
  [ "$(merge_any "$pid")" = no ] || fail "$c: ksm-demo mergeable before LD_PRELOAD"
  ok "$c: ksm-demo runs (host pid $pid), ksm_merge_any: no"
  check_rpm_flow "$c"
  podman exec "$c" sh -ec "$how" || fail "$c: restart with LD_PRELOAD"
  pid=$(host_pid_of_demo "$c") || fail "$c: ksm-demo not running after restart"
  [ "$(merge_any "$pid")" = yes ] || fail "$c: ksm_merge_any is not yes after LD_PRELOAD"
  ok "$c: after LD_PRELOAD ksm-demo (host pid $pid) shows ksm_merge_any: yes"
}

sysv() {
  local c=$prefix-sysv
  started+=("$c")
  podman run -d --name "$c" localhost/samepage-sysv:bookworm >/dev/null
  podman exec "$c" sh -c 'for i in $(seq 50); do [ -s /run/ksm-demo.pid ] && exit 0; sleep 0.1; done; exit 1' \
    || fail "$c: ksm-demo not started at boot"
  podman exec "$c" sh -c '! test -e /usr/lib/systemd/systemd' || fail "$c: systemd present"
  # The seed's edit: LD_PRELOAD below "export PATH" (exported, so the daemon inherits it).
  check_demo "$c" 'sed -i "/^export PATH\$/a LD_PRELOAD=/usr/lib64/libksm_preload.so\nexport LD_PRELOAD" /etc/init.d/ksm-demo
    service ksm-demo restart >/dev/null && service ksm-demo status >/dev/null'
  local t=$SECONDS
  podman stop "$c" >/dev/null
  [ $((SECONDS - t)) -lt 5 ] || fail "$c: podman stop took $((SECONDS - t)) s (PID 1 ignores SIGTERM?)"
  ok "$c: stops promptly"
}

systemd() {
  local c=$prefix-systemd
  started+=("$c")
  podman run -d --systemd=always --name "$c" localhost/samepage-systemd:bookworm >/dev/null
  podman exec "$c" sh -c 'for i in $(seq 100); do s=$(systemctl is-system-running 2>/dev/null); [ "$s" = running ] && exit 0; sleep 0.1; done; echo "state $s" >&2; systemctl --failed >&2; exit 1' \
    || fail "$c: systemd did not reach 'running'"
  podman exec "$c" systemctl is-enabled -q ksm-demo.service || fail "$c: ksm-demo.service not enabled"
  check_demo "$c" 'mkdir -p /etc/systemd/system/ksm-demo.service.d
    printf "[Service]\nEnvironment=LD_PRELOAD=/usr/lib64/libksm_preload.so\n" >/etc/systemd/system/ksm-demo.service.d/ksm.conf
    systemctl daemon-reload && systemctl restart ksm-demo.service'
  podman stop "$c" >/dev/null
}

fleet() {
  podman run --rm --name "$prefix-fleet" localhost/samepage-fleet:bookworm sh -ec '
    /usr/sbin/sshd -t; command -v sudo python3 dnf rpm ip >/dev/null
    test -f /etc/yum.repos.d/samepage-fixtures.repo' \
    || fail "fleet: sshd -t / tools"
  ok "fleet: sshd config valid, sudo python3 dnf rpm ip present"
}

# The stack image: Debian's MariaDB, Apache and memcached start at "boot" through their own init
# scripts; the REAL ksm_preload RPM comes from the samepage-real repository by dnf download
# alone (dnf's download-only install cannot resolve its Requires in a container) and rpm -i
# --nodeps installs it and nothing else.
stack() {
  local c=$prefix-stack
  started+=("$c")
  podman run -d --name "$c" localhost/samepage-stack:bookworm >/dev/null
  podman exec "$c" sh -c 'for i in $(seq 300); do [ -s /run/mysqld/mysqld.pid ] && [ -s /run/apache2/apache2.pid ] && [ -s /run/memcached.pid ] && exit 0; sleep 0.2; done; exit 1' \
    || fail "$c: MariaDB, Apache or memcached not started at boot"
  ok "$c: mariadb, apache2 and memcached started by their init scripts"
  podman exec "$c" sh -ec '
    sed -i "s/^enabled=.*/enabled=0/" /etc/yum.repos.d/samepage-fixtures.repo
    sed -i "s/^enabled=.*/enabled=1/" /etc/yum.repos.d/samepage-real.repo
    rpm -qa | sort >/tmp/before
    ! dnf install -y -q --downloadonly --downloaddir=/tmp/dl ksm_preload >/tmp/dl.log 2>&1
    grep -q "nothing provides kernel >= 2.6.32" /tmp/dl.log
    mkdir -p /tmp/dl2 && cd /tmp/dl2 && dnf download -q ksm_preload >/dev/null 2>&1
    test -f /tmp/dl2/ksm_preload-0.10-3.el6.x86_64.rpm
    rpm -i --nodeps /tmp/dl2/ksm_preload-0.10-3.el6.x86_64.rpm 2>/dev/null
    rpm -qa | sort >/tmp/after
    test "$(comm -13 /tmp/before /tmp/after)" = ksm_preload-0.10-3.el6.x86_64
    test "$(readlink -f /usr/lib64/libksm_preload.so)" = /usr/lib64/libksm_preload.so.0.0.0' \
    || fail "$c: the real RPM by dnf download + rpm -i --nodeps"
  ok "$c: real ksm_preload-0.10-3.el6: download-only install fails on its Requires, dnf download + rpm -i --nodeps installs it alone"
  # The image holds this checkout's build of the package, not a build cached from another one.
  local rpm=ksm_preload-0.10-3.el6.x86_64.rpm in_image here_built
  in_image=$(podman exec "$c" sha256sum "/srv/samepage-real-repo/$rpm" | cut -d' ' -f1)
  here_built=$(sha256sum <"$root/build/fixtures/real/$rpm" | cut -d' ' -f1)
  [ "$in_image" = "$here_built" ] || fail "$c: its $rpm ($in_image) is not build/fixtures/real's ($here_built)"
  ok "$c: its $rpm is build/fixtures/real's (sha256 $here_built)"
  podman stop "$c" >/dev/null
}

# The real RPM builds reproducibly: a second build elsewhere gives the same bytes, so images
# keyed on it stay valid when a fresh clone rebuilds it.
reproducible() {
  local rpm=ksm_preload-0.10-3.el6.x86_64.rpm again
  again=$(mktemp -d "${TMPDIR:-/tmp}/samepage-real-again.XXXXXX")
  started_dirs+=("$again")
  "$root/tests/fixtures/build_real_rpm.sh" "$again" 2>/dev/null || fail "build_real_rpm.sh $again failed"
  cmp -s "$again/$rpm" "$root/build/fixtures/real/$rpm" \
    || fail "a second build of $rpm differs from build/fixtures/real's: the build is not reproducible"
  ok "build_real_rpm.sh: a second build in another directory gives the same $rpm, byte for byte"
}

sysv
systemd
fleet
stack
reproducible
echo "all image checks passed"
