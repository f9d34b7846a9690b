#!/usr/bin/env python
"""Save and restore the real kernel's KSM knobs around tests that change them.

    ksm_knobs.py save FILE      write every writable knob's value to FILE (JSON)
    ksm_knobs.py restore FILE   unmerge (run=2), put every saved knob back, then the saved run
    ksm_knobs.py defaults       the kernel defaults (run=0, pages_to_scan=100, sleep_millisecs=20, ...)
"""
import json
import os
import sys

SYSFS = os.environ.get("KSM_SYSFS", "/sys/kernel/mm/ksm")
# Restore order mirrors plugins/module_utils/_ksm.py: advisor first, run last.
ORDER = [
    "advisor_mode", "advisor_max_cpu", "advisor_min_pages_to_scan", "advisor_max_pages_to_scan",
    "advisor_target_scan_time", "pages_to_scan", "sleep_millisecs", "use_zero_pages", "smart_scan",
    "stable_node_chains_prune_millisecs", "merge_across_nodes", "max_page_sharing",
]
DEFAULTS = {"advisor_mode": "none", "pages_to_scan": 100, "sleep_millisecs": 20, "use_zero_pages": 0,
            "smart_scan": 1, "merge_across_nodes": 1, "max_page_sharing": 256,
            "stable_node_chains_prune_millisecs": 2000, "advisor_max_cpu": 70,
            "advisor_min_pages_to_scan": 500, "advisor_max_pages_to_scan": 30000,
            "advisor_target_scan_time": 200, "run": 0}


def read(name):
    with open(os.path.join(SYSFS, name)) as handle:
        text = handle.read().strip()
    if name == "advisor_mode":
        return next((w[1:-1] for w in text.split() if w.startswith("[")), text)
    return int(text)


def write(name, value):
    with open(os.path.join(SYSFS, name), "w") as handle:
        handle.write(str(value))


def save():
    """Every writable knob present on this kernel, as the kernel reports it."""
    return {name: read(name) for name in ORDER + ["run"] if os.path.exists(os.path.join(SYSFS, name))}


def restore(saved):
    write("run", 2)  # unmerge, so merge_across_nodes / max_page_sharing accept writes
    for name in ORDER:
        if name in saved and read(name) != saved[name]:
            write(name, saved[name])
    write("run", saved.get("run", 0))


def main(argv):
    if argv[:1] == ["save"] and len(argv) == 2:
        with open(argv[1], "w") as handle:
            json.dump(save(), handle)
    elif argv[:1] == ["restore"] and len(argv) == 2:
        with open(argv[1]) as handle:
            restore(json.load(handle))
    elif argv == ["defaults"]:
        restore({k: v for k, v in DEFAULTS.items() if os.path.exists(os.path.join(SYSFS, k))})
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
