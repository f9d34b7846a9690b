#!/usr/bin/env bash
# Controller matrix: for each ansible-core version the collection claims (meta/runtime.yml),
# in its own venv (.venv-<version>, cached by requirements hash), run
#   sanity   ansible-test sanity with that version's tests/sanity/ignore-<version>.txt
#   unit     the unit tests (pytest tests/unit) against that ansible-core
#   smoke    every module against this machine (tests/matrix/smoke.yml; real KSM knobs under
#            the kernel lock, restored afterwards)
# Usage: scripts/matrix.sh [--steps sanity,unit,smoke] [--venvs-only] [VERSION...]
#        (default: every step, versions 2.16 2.18 2.20). Prints each stage's time at the end.
#        scripts/matrix.sh --interpreters: the module runs of tests/matrix from ansible-core 2.16
#        on the targets' Pythons of EL7 and EL8 (pyenv's 2.7 and 3.6), then the fleet rollout
#        on EL7-like, EL8-like and Debian SSH hosts (tests/targets) instead.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
versions_all=(2.16 2.18 2.20)
steps=sanity,unit,smoke
venvs_only=0
interpreters=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --venvs-only) venvs_only=1; shift ;;
    --interpreters) interpreters=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "matrix: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ "$#" -gt 0 ] && versions=("$@") || versions=("${versions_all[@]}")

log() { printf '==> matrix: %s\n' "$*" >&2; }
die() { printf 'matrix: %s\n' "$*" >&2; exit 1; }

# The controller Python of each version: 2.20 needs >= 3.12 (pyenv's), the others run on 3.11.
controller_minor() {
  case "$1" in
    2.16|2.18) echo 3.11 ;;
    2.20) echo 3.12 ;;
    *) die "unknown ansible-core version '$1' (known: ${versions_all[*]})" ;;
  esac
}

# Highest pyenv CPython of a minor version, e.g. 3.12 -> /root/.pyenv/versions/3.12.1/bin/python.
pyenv_python() {
  local minor=$1 root best
  root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
  # sort -V: 3.12.10 sorts after 3.12.9
  best=$(printf '%s\n' "$root"/versions/"$minor".*/bin/python | sort -V | tail -n 1)
  [ -x "$best" ] || die "no Python $minor under $root/versions (pyenv install $minor)"
  echo "$best"
}

venv_dir() { echo "$here/.venv-$1"; }

ensure_venv() {
  local version=$1 venv python req stamp want
  venv=$(venv_dir "$version")
  req=$here/tests/matrix/requirements-$version.txt
  [ -f "$req" ] || die "$req is missing"
  python=$(pyenv_python "$(controller_minor "$version")")
  stamp=$venv/.requirements.sha256
  want=$( { "$python" -VV; cat "$req"; } | sha256sum | cut -d' ' -f1)
  if [ -x "$venv/bin/ansible-test" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  log "creating $venv ($("$python" -V 2>&1), $(grep -m1 '^ansible-core' "$req"))"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  # ansible-test pins each sanity test's tools itself; install exactly those (no bootstrap
  # download at test time: this machine kind reaches the package index only).
  local data
  data=$("$venv/bin/python" -c 'import ansible_test, os; print(os.path.join(os.path.dirname(ansible_test.__file__), "_data", "requirements"))')
  local files=()
  for f in "$data"/sanity.*.txt; do
    files+=(-r "$f")
  done
  "$venv/bin/pip" install -q --disable-pip-version-check "${files[@]}"
  echo "$want" > "$stamp"
}

# ansible-test sanity needs the collection at .../ansible_collections/samepage/ksm: copy the
# files git would ship (tracked + untracked-but-not-ignored) there, as scripts/sanity.sh does.
run_sanity() {
  local version=$1 venv work dest pyminor
  venv=$(venv_dir "$version")
  pyminor=$(controller_minor "$version")
  [ -e "$here/tests/sanity/ignore-$version.txt" ] || die "tests/sanity/ignore-$version.txt is missing"
  # ansible-test downloads a get-pip script for the virtualenvs of its import test; this
  # machine kind reaches only the package index: put the offline stand-in under every name
  # this ansible-test version may look for (its pinned pip versions).
  mkdir -p ~/.ansible/test/cache
  local pip_version
  for pip_version in $("$venv/bin/python" - <<'PY'
import os, re, ansible_test
src = open(os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")).read()
print(" ".join(sorted(set(re.findall(r"""pip(?:=| ?= ?|_VERSION = )['"]([0-9.]+)['"]""", src)))))
PY
  ); do
    cp "$here/tests/sanity/get_pip_offline.py" ~/.ansible/test/cache/"get_pip_${pip_version//./_}.py"
  done
  work=$(mktemp -d "/tmp/samepage-matrix-$version.XXXXXX")
  dest=$work/ansible_collections/samepage/ksm
  mkdir -p "$dest"
  (cd "$here" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] || [ -L "$f" ] || continue   # deleted in the work tree
    cp --parents -P "$f" "$dest/"
  done)
  local rc=0
  (cd "$dest" && git init -q && git add -A && git -c user.email=ci@localhost -c user.name=ci commit -qm sanity \
    && PATH="$venv/bin:$PATH" "$venv/bin/ansible-test" sanity --local --python "$pyminor" --color no) || rc=$?
  rm -rf "$work"
  return "$rc"
}

run_unit() {
  local venv
  venv=$(venv_dir "$1")
  "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit
}

# Every module against this machine with this controller; the target interpreter is the
# controller's own Python (tests/matrix/test_modules.py; real knobs under the kernel lock).
run_smoke() {
  local venv
  venv=$(venv_dir "$1")
  SAMEPAGE_TARGET_PYTHON=$venv/bin/python "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/matrix
}

# ansible-core 2.16 is the newest controller that still manages Python 2.7 and 3.6 targets.
run_interpreters() {
  local venv targets start rc=0
  ensure_venv 2.16
  venv=$(venv_dir 2.16)
  targets="$(pyenv_python 2.7),$(pyenv_python 3.6)"
  log "ansible-core 2.16 modules on $targets"
  start=$SECONDS
  SAMEPAGE_TARGET_PYTHON=$targets "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/matrix || rc=$?
  printf '\n== interpreter runs (ansible-core 2.16 on Python 2.7 and 3.6): %d s\n' $((SECONDS - start)) >&2
  # The fleet rollout on EL7-like, EL8-like and Debian SSH hosts (tests/fleet/fleet.py --flavours).
  start=$SECONDS
  "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/targets || rc=$?
  printf '== EL-like fleet (site, idempotence, check, reboot, report): %d s\n' $((SECONDS - start)) >&2
  return "$rc"
}

main() {
  local version step start report=() failed=()
  if [ "$interpreters" = 1 ]; then
    run_interpreters
    return
  fi
  for version in "${versions[@]}"; do
    controller_minor "$version" >/dev/null
    start=$SECONDS
    ensure_venv "$version"
    report+=("$(printf '%-6s %-7s %5d s' "$version" venv $((SECONDS - start)))")
  done
  if [ "$venvs_only" = 0 ]; then
    for version in "${versions[@]}"; do
      for step in ${steps//,/ }; do
        case "$step" in sanity|unit|smoke) ;; *) die "unknown step '$step' (known: sanity, unit, smoke)" ;; esac
        log "ansible-core $version: $step"
        start=$SECONDS
        local status=ok
        "run_$step" "$version" || { status=FAILED; failed+=("$version $step"); }
        report+=("$(printf '%-6s %-7s %5d s  %s' "$version" "$step" $((SECONDS - start)) "$status")")
      done
    done
  fi
  printf '\n== matrix stage times (ansible-core, step, seconds)\n' >&2
  printf '%s\n' "${report[@]}" >&2
  if [ "${#failed[@]}" -gt 0 ]; then
    die "failed: $(IFS=,; echo "${failed[*]}")"
  fi
}

main
