#!/usr/bin/env bash
# Build the test images locally (no registry), skipping every image whose inputs did not change.
#   tests/images/build.sh [NAME...]      NAME: base rpmbase systemd sysv fleet (default: all)
#   tests/images/build.sh --list         print the image references
# Images (all tagged :bookworm):
#   localhost/samepage-base      debootstrap --variant=minbase bookworm, imported
#   localhost/samepage-rpmbase   + python3, rpm, dnf, the ksm_preload fixture repo preconfigured
#   localhost/samepage-systemd   + systemd as PID 1, ksm-demo.service enabled
#   localhost/samepage-sysv      + SysV init script ksm-demo, no systemd
#   localhost/samepage-fleet     + openssh-server, sudo (rootfs for the SSH fleet harness)
# Cache rule: each image carries label io.samepage.inputs = sha256 over its Containerfile
# directory, the fixture sources it copies, and its parent's label; equal label = no rebuild.
# Environment: CONTAINERS_CONF (default tests/podman/containers.conf),
#   SAMEPAGE_DEBIAN_MIRROR (default http://deb.debian.org/debian), SAMEPAGE_IMAGES_FORCE=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/tests/podman/containers.conf}
mirror=${SAMEPAGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
force=${SAMEPAGE_IMAGES_FORCE:-0}
tag=bookworm
label=io.samepage.inputs
work=$root/build/images
all=(base rpmbase systemd sysv fleet)

log() { printf '==> images: %s\n' "$*" >&2; }
die() { printf 'images: %s\n' "$*" >&2; exit 1; }
ref() { echo "localhost/samepage-$1:$tag"; }

parent() {
  case "$1" in
    base) echo "" ;;
    rpmbase) echo base ;;
    systemd|sysv|fleet) echo rpmbase ;;
    *) die "unknown image '$1' (known: ${all[*]})" ;;
  esac
}

# Repository files (relative to the repo root) whose content goes into an image.
inputs() {
  echo "tests/images/$1"
  case "$1" in
    rpmbase) echo tests/fixtures/build_repo.sh; echo tests/fixtures/ksm_preload ;;
    systemd|sysv) echo tests/fixtures/demo ;;
  esac
}

inputs_hash() {
  local name=$1 up
  up=$(parent "$name")
  {
    echo "image=$name tag=$tag"
    [ -z "$up" ] || echo "parent=$(label_of "$up")"
    # shellcheck disable=SC2046
    (cd "$root" && find $(inputs "$name") -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -d' ' -f1
}

label_of() {
  podman image inspect --format "{{ index .Labels \"$label\" }}" "$(ref "$1")" 2>/dev/null || true
}

image_id() { podman image inspect --format '{{ .Id }}' "$(ref "$1")" 2>/dev/null || true; }

# Drop the previous image of this tag once nothing uses it (it is only a stale cache).
drop_old() {
  local old=$1 name=$2
  if [ -n "$old" ] && [ "$old" != "$(image_id "$name")" ]; then
    podman rmi "$old" >/dev/null 2>&1 || true
  fi
}

stage() {
  local name=$1 ctx=$work/ctx-$1
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp -a "$here/$name/." "$ctx/"
  case "$name" in
    rpmbase)
      "$root/tests/fixtures/build_repo.sh" "$root/build/fixtures"
      cp -a "$root/build/fixtures/repo" "$ctx/samepage-repo"
      cp "$root/build/fixtures/samepage-fixtures.repo" "$ctx/"
      ;;
    systemd|sysv)
      # Host gcc: the host is Debian bookworm, so its glibc matches the images'.
      gcc -O2 -Wall -Wextra -o "$ctx/ksm-demo" "$root/tests/fixtures/demo/ksm-demo.c"
      cp "$root"/tests/fixtures/demo/ksm-demo.{init,service,default} "$ctx/"
      chmod 0755 "$ctx/ksm-demo.init"
      ;;
  esac
  echo "$ctx"
}

build_base() {
  local hash=$1 rootfs=$work/base-rootfs
  # shellcheck source=base/debootstrap.conf disable=SC1091
  . "$here/base/debootstrap.conf"
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  log "debootstrap --variant=$VARIANT $SUITE ($mirror)"
  debootstrap --variant="$VARIANT" "$SUITE" "$rootfs" "$mirror" >"$work/base.log" 2>&1 \
    || { tail -n 30 "$work/base.log" >&2; die "debootstrap failed (log: $work/base.log)"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages
  log "podman import $(ref base)"
  tar --numeric-owner -C "$rootfs" -c . \
    | podman import -q --change "LABEL $label=$hash" --change 'CMD ["/bin/bash"]' - "$(ref base)" >/dev/null
  rm -rf "$rootfs"
}

build_one() {
  local name=$1 hash old ctx
  hash=$(inputs_hash "$name")
  if [ "$force" != 1 ] && [ "$(label_of "$name")" = "$hash" ]; then
    log "$(ref "$name") up to date"
    return 0
  fi
  old=$(image_id "$name")
  local start=$SECONDS
  if [ "$name" = base ]; then
    build_base "$hash"
  else
    ctx=$(stage "$name")
    log "podman build $(ref "$name")"
    podman build --network=host --pull=never --layers=false --label "$label=$hash" \
      -t "$(ref "$name")" -f "$ctx/Containerfile" "$ctx" >"$work/$name.log" 2>&1 \
      || { tail -n 30 "$work/$name.log" >&2; die "podman build $name failed (log: $work/$name.log)"; }
    rm -rf "$ctx"
  fi
  drop_old "$old" "$name"
  log "$(ref "$name") built in $((SECONDS - start)) s"
}

main() {
  local wanted=() name want_set=" " jobs=() pids=() failed=0
  if [ "${1:-}" = --list ]; then
    for name in "${all[@]}"; do ref "$name"; done
    return 0
  fi
  [ "$#" -gt 0 ] && wanted=("$@") || wanted=("${all[@]}")
  for name in "${wanted[@]}"; do
    parent "$name" >/dev/null
    # Ancestors first.
    local up=$name chain=()
    while [ -n "$up" ]; do chain=("$up" "${chain[@]}"); up=$(parent "$up"); done
    for up in "${chain[@]}"; do
      case "$want_set" in *" $up "*) ;; *) want_set="$want_set$up " ;; esac
    done
  done
  command -v podman >/dev/null || die "podman not found (scripts/bootstrap.sh test installs it)"
  mkdir -p "$work"
  exec 9>"$work/.lock"
  flock 9
  # base and rpmbase in order; the leaf images in parallel (apt downloads overlap).
  for name in base rpmbase; do
    case "$want_set" in *" $name "*) build_one "$name" ;; esac
  done
  for name in systemd sysv fleet; do
    case "$want_set" in *" $name "*) jobs+=("$name") ;; esac
  done
  for name in "${jobs[@]}"; do
    build_one "$name" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
  done
  [ "$failed" = 0 ] || die "some images failed to build"
}

main "$@"
