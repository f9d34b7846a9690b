#!/usr/bin/env bash
# Fetch the real-script corpus: the Debian packages listed in tests/corpus/packages.txt,
# downloaded with `apt-get download` (nothing is installed, no maintainer script runs) and
# extracted with `dpkg-deb -x`.
#
# Cache: <cache>/debs/<package>_<version>_<arch>.deb (keyed by the candidate version, so a
# package is downloaded once per version) and <cache>/root/<package>_<version>/ (extracted).
# Writes <cache>/manifest.tsv: package, version, deb, extracted directory.
# Without network, a package whose candidate is not cached falls back to the newest cached
# version (said on stderr); a package that cannot be had at all is listed as missing.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${CORPUS_CACHE:-$ROOT/.cache/corpus}"
LIST="${CORPUS_PACKAGES:-$HERE/packages.txt}"
mkdir -p "$CACHE/debs" "$CACHE/root"

mapfile -t PKGS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$LIST" | grep -v '^$')

candidates() {
    # package<TAB>version<TAB>arch for every listed package apt knows
    apt-cache show --no-all-versions "${PKGS[@]}" 2>/dev/null | awk '
        /^Package: /{p=$2} /^Version: /{v=$2} /^Architecture: /{a=$2}
        /^$/{ if (p != "") print p "\t" v "\t" a; p=""; v=""; a="" }
        END{ if (p != "") print p "\t" v "\t" a }'
}

declare -A VER ARCH
load() {
    VER=(); ARCH=()
    while IFS=$'\t' read -r p v a; do VER[$p]=$v; ARCH[$p]=$a; done < <(candidates)
}
load
if [ "${#VER[@]}" -lt "${#PKGS[@]}" ] && [ -z "${CORPUS_NO_UPDATE:-}" ]; then
    # a fresh machine may not have package lists yet
    apt-get update -qq >/dev/null 2>&1 || echo "fetch.sh: apt-get update failed" >&2
    load
fi

debname() { printf '%s_%s_%s.deb' "$1" "${2//:/%3a}" "$3"; }

want=()
for p in "${PKGS[@]}"; do
    [ -n "${VER[$p]:-}" ] || continue
    f="$CACHE/debs/$(debname "$p" "${VER[$p]}" "${ARCH[$p]}")"
    [ -s "$f" ] || want+=("$p=${VER[$p]}")
done

downloaded=0
if [ "${#want[@]}" -gt 0 ]; then
    tmp="$(mktemp -d "$CACHE/dl.XXXXXX")"
    # one apt-get call for all missing packages; retry one by one if it fails as a whole
    if ! (cd "$tmp" && apt-get download -q "${want[@]}" >/dev/null 2>"$tmp/err"); then
        for w in "${want[@]}"; do
            (cd "$tmp" && apt-get download -q "$w" >/dev/null 2>>"$tmp/err") || true
        done
    fi
    for d in "$tmp"/*.deb; do
        [ -e "$d" ] || continue
        mv "$d" "$CACHE/debs/"
        downloaded=$((downloaded + 1))
    done
    if [ -s "$tmp/err" ]; then sed 's/^/fetch.sh: /' "$tmp/err" >&2; fi
    rm -rf "$tmp"
fi

manifest="$CACHE/manifest.tsv.new"
: > "$manifest"
have=0; missing=()
for p in "${PKGS[@]}"; do
    f=""
    if [ -n "${VER[$p]:-}" ]; then
        f="$CACHE/debs/$(debname "$p" "${VER[$p]}" "${ARCH[$p]}")"
        [ -s "$f" ] || f=""
    fi
    if [ -z "$f" ]; then
        f="$(find "$CACHE/debs" -maxdepth 1 -name "${p}_*.deb" 2>/dev/null | sort -V | tail -n 1)"
        [ -n "$f" ] && echo "fetch.sh: $p: candidate not available, using cached $(basename "$f")" >&2
    fi
    if [ -z "$f" ]; then missing+=("$p"); continue; fi
    v="$(dpkg-deb -f "$f" Version)"
    dir="$CACHE/root/${p}_${v//:/%3a}"
    if [ ! -e "$dir/.extracted" ]; then
        rm -rf "$dir"; mkdir -p "$dir"
        dpkg-deb -x "$f" "$dir"
        touch "$dir/.extracted"
    fi
    printf '%s\t%s\t%s\t%s\n' "$p" "$v" "$f" "$dir" >> "$manifest"
    have=$((have + 1))
done
mv "$manifest" "$CACHE/manifest.tsv"
echo "fetch.sh: ${#PKGS[@]} packages listed, $have available ($downloaded downloaded now), ${#missing[@]} missing${missing:+: ${missing[*]}}"
