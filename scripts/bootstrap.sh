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
  test) install_apt; install_venv; link_collection ;;
  *) echo "usage: $0 controller|test" >&2; exit 2 ;;
esac
