#!/usr/bin/env bash
# Set up everything the collection needs on a fresh Debian machine, idempotently.
#   scripts/bootstrap.sh controller   venv + collection path (enough for the playbooks)
#   scripts/bootstrap.sh test         the above + apt tooling (podman, rpm, dnf, sshd, ...)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
stage=${1:-controller}
PYTHON=${PYTHON:-python3}

log() { printf '==> %s\n' "$*" >&2; }

apt_packages=(podman runc debootstrap uidmap fuse-overlayfs rpm dnf dnf-plugins-core
  createrepo-c python3-dnf openssh-server openssh-client iproute2 gcc libc6-dev make
  util-linux procps ca-certificates shellcheck systemd strace
  autoconf automake libtool libtool-bin build-essential)

install_apt() {
  local missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Packages whose services the tests start themselves (on loopback, with their own config):
# installed without recommends, and their own services stopped if the install started them
# (Debian starts them unless policy-rc.d says no; under systemd ksmtuned would take over KSM).
service_packages=(prometheus prometheus-node-exporter ksmtuned)
service_units=(prometheus prometheus-node-exporter ksmtuned ksm)

install_service_packages() {
  local missing=()
  for p in "${service_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  log "apt-get install --no-install-recommends ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for unit in "${service_units[@]}"; do
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$unit" ] && "/etc/init.d/$unit" status >/dev/null 2>&1; then
      "/etc/init.d/$unit" stop >/dev/null || true
    fi
  done
}

# ansible-builder and antsibull-docs in a venv of their own (their dependencies stay out of .venv).
install_release_venv() {
  local want dir
  want=$(sha256sum tests/release/requirements.txt | cut -c1-16)
  dir=.cache/release-venv-$want
  if ! [ -x "$dir/bin/antsibull-docs" ] || ! [ -x "$dir/bin/ansible-builder" ]; then
    log "creating $dir from tests/release/requirements.txt"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check -r tests/release/requirements.txt
  fi
  ln -sfn "release-venv-$want" .cache/release-venv
}

install_venv() {
  local stamp=.venv/.requirements.sha256
  local want
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  log "creating .venv from requirements.txt"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
}

link_collection() {
  # Ansible finds collections under <path>/ansible_collections/<ns>/<name>.
  mkdir -p build/collections/ansible_collections/samepage
  ln -sfn "$here" build/collections/ansible_collections/samepage/ksm
}

case "$stage" in
  controller) install_venv; link_collection ;;
  test) install_apt; install_service_packages; install_venv; install_release_venv; link_collection ;;
  *) echo "usage: $0 controller|test" >&2; exit 2 ;;
esac
