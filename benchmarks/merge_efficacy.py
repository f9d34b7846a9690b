#!/usr/bin/env python
"""Merge efficacy on the real kernel, for each node-role profile and the boot-boost settings.

    .venv/bin/python benchmarks/merge_efficacy.py [--workers 4] [--mib 64] [--limit-seconds 60]

N worker processes (python, opted in to KSM by the project's preload library
build/fixtures/libksm_preload.so through LD_PRELOAD, as the container role does) each hold M MiB
in which page k has its own content, identical across workers: the physical limit of merging is
(N-1)/N of the N*M MiB. For each profile: time until 95 % of that limit is merged (pages_sharing),
the fraction reached within the limit time, and ksmd's CPU share over 10 s at steady state
(/proc/<ksmd>/stat utime+stime). Holds the kernel lock and restores every knob afterwards.
Targets: >= 95 % of the limit within 60 s with the boost settings; ksmd <= 5 % CPU relaxed.
"""
import argparse
import fcntl
import mmap
import os
import pathlib
import platform
import subprocess
import sys
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
import ksm_knobs  # noqa: E402

SYSFS = pathlib.Path("/sys/kernel/mm/ksm")
LOCK = "/run/lock/samepage-ksm-kernel.lock"
PRELOAD = ROOT / "build" / "fixtures" / "libksm_preload.so"
PAGE = mmap.PAGESIZE
TICK = os.sysconf("SC_CLK_TCK")
WORKER = r"""
import mmap, sys, time
mib = int(sys.argv[1]); page = mmap.PAGESIZE
area = mmap.mmap(-1, mib << 20)
for k in range(len(area) // page):
    area[k * page:(k + 1) * page] = (b"%08d" % k) * (page // 8)
print("ready", flush=True)
time.sleep(3600)
"""


def knob(name):
    return int((SYSFS / name).read_text().split()[0])


def ksmd_ticks():
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if pathlib.Path("/proc/%s/comm" % entry).read_text().strip() == "ksmd":
                    fields = pathlib.Path("/proc/%s/stat" % entry).read_text().rsplit(")", 1)[1].split()
                    return int(fields[11]) + int(fields[12])
            except OSError:
                continue
    raise SystemExit("no ksmd thread found")


def profiles():
    node_vars = yaml.safe_load((ROOT / "roles" / "node" / "vars" / "main.yml").read_text())
    node_defaults = yaml.safe_load((ROOT / "roles" / "node" / "defaults" / "main.yml").read_text())
    found = [(name, values) for name, values in node_vars["__ksm_node_profiles"].items() if values]
    found.append(("boot boost", dict(node_defaults["ksm_node_boost_settings"], run=1)))
    return found


def prepare(values):
    # run=2 unmerges everything and also drops every process's KSM opt-in: it must happen
    # before the workers start, never after.
    ksm_knobs.write("run", 2)
    ksm_knobs.write("advisor_mode", values.get("advisor_mode", "none"))
    for name in ("pages_to_scan", "sleep_millisecs"):
        if name in values:
            ksm_knobs.write(name, values[name])


def measure(name, values, workers, mib, limit_seconds):
    limit_pages = (workers - 1) * (mib << 20) // PAGE
    prepare(values)
    env = dict(os.environ, LD_PRELOAD=str(PRELOAD))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(mib)], env=env,
                              stdout=subprocess.PIPE, text=True) for _worker in range(workers)]
    try:
        for proc in procs:
            proc.stdout.readline()
        started = time.monotonic()
        ksm_knobs.write("run", values.get("run", 1))
        reached_at = None
        while time.monotonic() - started < limit_seconds:
            if reached_at is None and knob("pages_sharing") >= 0.95 * limit_pages:
                reached_at = time.monotonic() - started
                break
            time.sleep(0.2)
        fraction = knob("pages_sharing") / limit_pages
        ticks = ksmd_ticks()
        time.sleep(10)
        cpu = (ksmd_ticks() - ticks) / TICK / 10 * 100
        return reached_at, fraction, cpu
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--limit-seconds", type=float, default=60)
    args = parser.parse_args()
    if not PRELOAD.exists():
        subprocess.run([str(ROOT / "tests" / "fixtures" / "build_repo.sh")], check=True)
    print("merge_efficacy: %d workers x %d MiB (limit %d MiB), %s, %d cores, %s" % (
        args.workers, args.mib, (args.workers - 1) * args.mib, platform.platform(), os.cpu_count(),
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())), flush=True)
    rows = []
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = ksm_knobs.save()
        try:
            for name, values in profiles():
                reached, fraction, cpu = measure(name, values, args.workers, args.mib, args.limit_seconds)
                settings = ", ".join("%s=%s" % kv for kv in sorted(values.items()) if kv[0] != "run")
                rows.append((name, settings, reached, fraction, cpu))
                print("  %-12s %s" % (name, rows[-1][2:]), flush=True)
        finally:
            ksm_knobs.restore(saved)
    print()
    print("| profile | settings | time to 95 %% of limit (s) | fraction of limit at stop | ksmd CPU %% (steady) |")
    print("|---|---|--:|--:|--:|")
    for name, settings, reached, fraction, cpu in rows:
        print("| %s | %s | %s | %.0f %% | %.1f |" % (
            name, settings, "%.1f" % reached if reached is not None else "> %d" % args.limit_seconds,
            fraction * 100, cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
