#!/usr/bin/env python
"""Print, as JSON, what a samepage.ksm.node run may change: the host kernel's KSM knobs and, per
container, mode + sha256 of every file of ours (rc.local, units, .wants links, tmpfiles.d).

    snapshot.py CONTAINER...
"""
import json
import subprocess
import sys

KNOBS = ["advisor_mode", "advisor_max_cpu", "advisor_min_pages_to_scan", "advisor_max_pages_to_scan",
         "advisor_target_scan_time", "pages_to_scan", "sleep_millisecs", "use_zero_pages", "smart_scan",
         "stable_node_chains_prune_millisecs", "merge_across_nodes", "max_page_sharing", "run"]
FILES = ("for f in /etc/rc.local /etc/systemd/system/samepage-ksm* /etc/systemd/system/*/samepage-ksm* "
         "/etc/tmpfiles.d/samepage-ksm.conf; do [ -e \"$f\" ] || [ -L \"$f\" ] || continue; "
         "printf '%s %s ' \"$f\" \"$(stat -c %a:%F \"$f\")\"; "
         "if [ -f \"$f\" ]; then sha256sum < \"$f\" | cut -d' ' -f1; else readlink \"$f\"; fi; done")


def knobs():
    values = {}
    for name in KNOBS:
        try:
            with open("/sys/kernel/mm/ksm/" + name) as handle:
                text = handle.read().strip()
        except OSError:
            continue
        # advisor_mode prints every choice with the active one in brackets: "[none] scan-time"
        words = [w[1:-1] for w in text.split() if w.startswith("[")]
        values[name] = words[0] if words else text
    return values


def files(container):
    out = subprocess.run(["podman", "exec", container, "sh", "-c", FILES], check=True,
                         capture_output=True, text=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


if __name__ == "__main__":
    json.dump({"knobs": knobs(), "files": {c: files(c) for c in sys.argv[1:]}}, sys.stdout, sort_keys=True)
