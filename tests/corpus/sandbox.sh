#!/usr/bin/env bash
# sandbox.sh WORLD STATE CMD...: run CMD with WORLD's etc, usr and var laid over this machine's,
# every write going to a tmpfs that disappears with the namespace.
# Run it as: unshare --mount --pid --net --fork --kill-child --mount-proc sandbox.sh ...
# (private mount, pid and network namespaces: nothing it starts outlives it or reaches a network).
# /etc, /usr, /var, /root, /srv, /opt and /home are overlays (upper layers on the tmpfs); /run and
# /tmp are fresh tmpfs (but for the checkout, SANDBOX_KEEP, when it lives under /tmp). /run/corpus-upper/<dir> shows each upper layer (every file written since
# the start); /run/corpus-probe collects the daemon probes' records.
set -euo pipefail
world=$1 state=$2
shift 2
mount --make-rprivate /
mount -t tmpfs -o size=512m,mode=0755 corpus-state "$state"
for dir in etc usr var root srv opt home; do
    [ -d "/$dir" ] || continue
    mkdir "$state/$dir.upper" "$state/$dir.work"
    lower="/$dir"
    [ -d "$world/$dir" ] && lower="$world/$dir:/$dir"
    mount -t overlay "corpus-$dir" -o "lowerdir=$lower,upperdir=$state/$dir.upper,workdir=$state/$dir.work" "/$dir"
done
mount -t tmpfs -o mode=0755 corpus-run /run
mkdir -p /run/lock /run/corpus-probe /run/corpus-upper
chmod 1777 /run/corpus-probe
for dir in etc usr var root srv opt home; do
    [ -d "$state/$dir.upper" ] || continue
    mkdir "/run/corpus-upper/$dir"
    mount --bind "$state/$dir.upper" "/run/corpus-upper/$dir"
done
# last: STATE may live under /tmp. SANDBOX_KEEP (the checkout, whose Python and inside.py run in
# here) stays visible, read-only, when it lives under /tmp too.
keep=${SANDBOX_KEEP:-}
case "$keep" in
    /tmp/*) mkdir /run/corpus-keep; mount --bind "$keep" /run/corpus-keep ;;
    *) keep= ;;
esac
mount -t tmpfs -o mode=1777 corpus-tmp /tmp
if [ -n "$keep" ]; then
    mkdir -p "$keep"
    mount --bind /run/corpus-keep "$keep"
    mount -o remount,bind,ro "$keep"
    umount /run/corpus-keep
    rmdir /run/corpus-keep
fi
exec /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
