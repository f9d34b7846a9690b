#!/usr/bin/env bash
# Build the test images locally (no registry), skipping every image whose inputs did not change.
#   tests/images/build.sh [NAME[:RELEASE]...]   NAME: as listed below (default: all, bookworm)
#   tests/images/build.sh --list         print the image references
# RELEASE (default bookworm) builds the same image on another Debian release, tagged :RELEASE:
# bullseye, trixie (debootstrapped from the same mirror), and systemd:bookworm-backports
# (systemd:bookworm + bookworm-backports' systemd, tests/images/systemd-backports).
# Images (all tagged :bookworm unless a RELEASE is named):
#   localhost/samepage-base      debootstrap --variant=minbase bookworm, imported
#   localhost/samepage-rpmbase   + python3, rpm, dnf, the ksm_preload fixture repo preconfigured
#   localhost/samepage-systemd   + systemd as PID 1, ksm-demo.service enabled
#   localhost/samepage-sysv      + SysV init script ksm-demo, no systemd
#   localhost/samepage-fleet     + openssh-server, sudo (rootfs for the SSH fleet harness)
#   localhost/samepage-stack     sysv + MariaDB, Apache + mod_php, memcached (real services, SysV scripts)
# rpmbase also holds the REAL ksm_preload-0.10-3.el6 RPM (tests/fixtures/build_real_rpm.sh) in a
# second, disabled file:// repository, samepage-real (/srv/samepage-real-repo).
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
all=(base rpmbase systemd sysv fleet stack)

log() { printf '==> images: %s\n' "$*" >&2; }
die() { printf 'images: %s\n' "$*" >&2; exit 1; }
releases=(bullseye bookworm trixie)
kind_of() { echo "${1%%:*}"; }
release_of() { case "$1" in *:*) echo "${1#*:}" ;; *) echo "$tag" ;; esac; }
ref() { echo "localhost/samepage-$(kind_of "$1"):$(release_of "$1")"; }
# Directory under tests/images/ holding an image's Containerfile.
image_dir() { case "$1" in systemd:bookworm-backports) echo systemd-backports ;; *) kind_of "$1" ;; esac; }

parent() {
  local rel suffix=""
  rel=$(release_of "$1")
  case "$1" in
    systemd:bookworm-backports) echo systemd; return ;;
  esac
  case " ${releases[*]} " in
    *" $rel "*) ;;
    *) die "unknown release '$rel' in '$1' (known: ${releases[*]}, and systemd:bookworm-backports)" ;;
  esac
  [ "$rel" = "$tag" ] || suffix=":$rel"
  case "$(kind_of "$1")" in
    base) echo "" ;;
    rpmbase) echo "base$suffix" ;;
    systemd|sysv|fleet) echo "rpmbase$suffix" ;;
    stack) echo "sysv$suffix" ;;
    *) die "unknown image '$1' (known: ${all[*]})" ;;
  esac
}

# Repository files (relative to the repo root) whose content goes into an image.
inputs() {
  echo "tests/images/$(image_dir "$1")"
  case "$(kind_of "$1")" in
    rpmbase) echo tests/fixtures/build_repo.sh; echo tests/fixtures/ksm_preload; echo tests/fixtures/build_real_rpm.sh ;;
    systemd|sysv) echo tests/fixtures/demo ;;
  esac
}

inputs_hash() {
  local name=$1 up
  up=$(parent "$name")
  {
    echo "image=$name tag=$tag"
    [ -z "$up" ] || echo "parent=$(label_of "$up")"
    # The real RPM is built outside the repository's files: the image is keyed on the RPM itself
    # (what goes into it), so a rebuilt RPM that differs can never hide behind a cached image.
    [ "$(kind_of "$name")" != rpmbase ] || echo "real=$(sha256sum <"$root/build/fixtures/real/ksm_preload-0.10-3.el6.x86_64.rpm")"
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
  local name=$1 ctx=$work/ctx-${1/:/-} rel
  rel=$(release_of "$name")
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp -a "$here/$(image_dir "$name")/." "$ctx/"
  # The same Containerfile on another release: FROM the parent built on that release.
  if [ "$rel" != "$tag" ] && [ "$(image_dir "$name")" = "$(kind_of "$name")" ]; then
    sed -i "s|^FROM localhost/samepage-\([a-z0-9-]*\):$tag\$|FROM localhost/samepage-\1:$rel|" "$ctx/Containerfile"
  fi
  case "$(kind_of "$name")" in
    rpmbase)
      "$root/tests/fixtures/build_repo.sh" "$root/build/fixtures"
      cp -a "$root/build/fixtures/repo" "$ctx/samepage-repo"
      cp "$root/build/fixtures/samepage-fixtures.repo" "$ctx/"
      cp -a "$root/build/fixtures/real/repo" "$ctx/samepage-real-repo"
      cp "$root/build/fixtures/real/samepage-real.repo" "$ctx/"
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
  local hash=$1 name=$2 rootfs
  rootfs=$work/base-rootfs-$(release_of "$2")
  # shellcheck source=base/debootstrap.conf disable=SC1091
  . "$here/base/debootstrap.conf"
  [ "$(release_of "$name")" = "$tag" ] || SUITE=$(release_of "$name")
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  log "debootstrap --variant=$VARIANT $SUITE ($mirror)"
  debootstrap --variant="$VARIANT" "$SUITE" "$rootfs" "$mirror" >"$work/base-$SUITE.log" 2>&1 \
    || { tail -n 30 "$work/base-$SUITE.log" >&2; die "debootstrap failed (log: $work/base-$SUITE.log)"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages
  log "podman import $(ref "$name")"
  tar --numeric-owner -C "$rootfs" -c . \
    | podman import -q --change "LABEL $label=$hash" --change 'CMD ["/bin/bash"]' - "$(ref "$name")" >/dev/null
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
  if [ "$(kind_of "$name")" = base ]; then
    build_base "$hash" "$name"
  else
    ctx=$(stage "$name")
    log "podman build $(ref "$name")"
    podman build --network=host --pull=never --layers=false --label "$label=$hash" \
      -t "$(ref "$name")" -f "$ctx/Containerfile" "$ctx" >"$work/${name/:/-}.log" 2>&1 \
      || { tail -n 30 "$work/${name/:/-}.log" >&2; die "podman build $name failed (log: $work/${name/:/-}.log)"; }
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
  case "$want_set" in *" rpmbase"[\ :]*) "$root/tests/fixtures/build_real_rpm.sh" "$root/build/fixtures/real" ;; esac
  # Other releases (NAME:RELEASE) in the same order: every base, every rpmbase, then the
  # images on rpmbase in parallel, then the images built on those (stack, systemd backports).
  local later=()
  for name in $want_set; do
    case "$(kind_of "$name")" in base) build_one "$name" ;; esac
  done
  for name in $want_set; do
    case "$(kind_of "$name")" in rpmbase) build_one "$name" ;; esac
  done
  for name in $want_set; do
    case "$(kind_of "$name")" in
      base|rpmbase) ;;
      *) case "$(kind_of "$(parent "$name")")" in rpmbase) jobs+=("$name") ;; *) later+=("$name") ;; esac ;;
    esac
  done
  for name in "${jobs[@]}"; do
    build_one "$name" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
  done
  [ "$failed" = 0 ] || die "some images failed to build"
  for name in "${later[@]}"; do build_one "$name"; done
}

main "$@"
