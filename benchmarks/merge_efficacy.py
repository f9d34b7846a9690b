#!/usr/bin/env python
"""Merge efficacy on the real kernel, for each node-role profile and the boot-boost settings.

    .venv/bin/python benchmarks/merge_efficacy.py [--workers 4] [--mib 64] [--limit-seconds 60]

N worker processes (python, opted in to KSM by the project's preload library
build/fixtures/libksm_preload.so through LD_PRELOAD, as the container role does) each hold M MiB
of private anonymous memory in which page k has its own content, identical across workers: the
physical limit of merging is (N-1)/N of the N*M MiB. Each profile is applied on top of the kernel
defaults (run=2 first, before the workers start). For each profile: time until 95 % of that limit
is merged, the fraction reached within the limit time (measured exactly on the workers' areas
from /proc/PID/pagemap: copies of page k minus distinct physical pages behind them; the global
pages_sharing, which also counts the interpreters' own identical heap pages, is shown beside it),
and ksmd's CPU share over 10 s afterwards (/proc/<ksmd>/stat utime+stime). Holds the kernel lock
and restores every knob afterwards.
Targets: >= 95 % of the limit within 60 s with the boost settings; ksmd <= 5 % CPU relaxed.
"""
import argparse
import array
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
BUILD_PRELOAD = ROOT / "tests" / "fixtures" / "build_repo.sh"
PAGE = mmap.PAGESIZE
TICK = os.sysconf("SC_CLK_TCK")
PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63
# KSM only merges private anonymous pages: Python's mmap.mmap(-1, n) defaults to MAP_SHARED,
# which is shmem (/dev/zero) and never merges, so the flags must be given.
WORKER = r"""
import ctypes, mmap, sys, time
mib = int(sys.argv[1]); page = mmap.PAGESIZE
area = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for k in range(len(area) // page):
    area[k * page:(k + 1) * page] = (b"%08d" % k) * (page // 8)
print("ready", ctypes.addressof(ctypes.c_char.from_buffer(area)), flush=True)
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


def ensure_preload():
    """Build the preload library if it is missing or its sources changed (a no-op otherwise)."""
    result = subprocess.run([str(BUILD_PRELOAD)], check=False)
    if result.returncode != 0 or not PRELOAD.exists():
        raise SystemExit("merge_efficacy: %s failed (exit %d) or left no %s; the workers need it"
                         % (BUILD_PRELOAD, result.returncode, PRELOAD))


def prepare(values):
    """Unmerge (run=2), then the kernel defaults with the profile's knobs on top; ksmd stays off.

    run=2 also drops every process's KSM opt-in: it must happen before the workers start.
    """
    wanted = dict(ksm_knobs.DEFAULTS, **values)
    ksm_knobs.write("run", 2)
    present = [name for name in ksm_knobs.ORDER if (SYSFS / name).exists()]
    if "advisor_mode" in present:
        # The kernel rejects pages_to_scan while the scan-time advisor owns it.
        ksm_knobs.write("advisor_mode", "none")
    for name in present:
        if name != "advisor_mode" and ksm_knobs.read(name) != wanted[name]:
            ksm_knobs.write(name, wanted[name])
    if "advisor_mode" in present and wanted["advisor_mode"] != "none":
        ksm_knobs.write("advisor_mode", wanted["advisor_mode"])
    elif "advisor_mode" not in present and "advisor_mode" in values:
        raise SystemExit("merge_efficacy: this kernel has no advisor_mode knob")


def check_worker(pid, addr, size):
    """Fail loudly unless the worker's area is what KSM can merge (preloaded, opted in, private anon)."""
    maps = pathlib.Path("/proc/%d/maps" % pid).read_text()
    if str(PRELOAD) not in maps:
        raise SystemExit("merge_efficacy: worker %d did not load %s" % (pid, PRELOAD))
    ksm_stat = pathlib.Path("/proc/%d/ksm_stat" % pid).read_text()
    if "ksm_merge_any: yes" not in ksm_stat:
        raise SystemExit("merge_efficacy: worker %d is not opted in to KSM:\n%s" % (pid, ksm_stat))
    header = "%x-%x " % (addr, addr + size)
    block = pathlib.Path("/proc/%d/smaps" % pid).read_text().split(header, 1)[-1].split("VmFlags:", 1)
    flags = block[1].split("\n", 1)[0].split() if len(block) == 2 else []
    if "mg" not in flags or " sh " in " %s " % " ".join(flags):
        raise SystemExit("merge_efficacy: worker %d area %s is not private mergeable memory (VmFlags %s)"
                         % (pid, header.strip(), " ".join(flags) or "?"))


def area_saved_pages(areas, pages):
    """Pages KSM saves inside the workers' areas, and how many area pages are resident.

    Page k of one worker can only share a frame with page k of another (every k has its own
    content), so the saving is the resident area pages minus the distinct frames behind them.
    """
    frames = []
    for pid, addr in areas:
        entries = array.array("Q")
        fd = os.open("/proc/%d/pagemap" % pid, os.O_RDONLY)
        try:
            entries.frombytes(os.pread(fd, pages * 8, addr // PAGE * 8))
        finally:
            os.close(fd)
        frames.extend(entry & PFN_MASK for entry in entries if entry & PRESENT)
    resident = sum(1 for frame in frames if frame)
    return resident - len(set(frames).difference((0,))), resident


def start_workers(procs, workers, mib):
    """Start the workers into procs (so the caller can always kill them); their (pid, area address)."""
    env = dict(os.environ, LD_PRELOAD=str(PRELOAD))
    for _worker in range(workers):
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(mib)], env=env,
                                      stdout=subprocess.PIPE, text=True))
    areas = []
    for proc in procs:
        line = proc.stdout.readline().split()
        if line[:1] != ["ready"]:
            raise SystemExit("merge_efficacy: worker %d did not start" % proc.pid)
        areas.append((proc.pid, int(line[1])))
        check_worker(proc.pid, int(line[1]), mib << 20)
    pages = (mib << 20) // PAGE
    before, resident = area_saved_pages(areas, pages)
    if resident != workers * pages:
        raise SystemExit("merge_efficacy: pagemap shows %d of %d area pages with a frame number (root needed)"
                         % (resident, workers * pages))
    if before or knob("pages_sharing"):
        raise SystemExit("merge_efficacy: %d area pages / %d pages_sharing merged before ksmd started"
                         % (before, knob("pages_sharing")))
    return areas


def measure(values, workers, mib, limit_seconds):
    """(seconds to 95 % of the limit or None, fraction within limit_seconds, pages_sharing / limit, ksmd CPU %)."""
    pages = (mib << 20) // PAGE
    limit_pages = (workers - 1) * pages
    prepare(values)
    procs = []
    try:
        areas = start_workers(procs, workers, mib)
        started = time.monotonic()
        ksm_knobs.write("run", values.get("run", 1))
        reached_at = None
        saved = 0
        while saved < limit_pages and time.monotonic() - started < limit_seconds:
            time.sleep(0.2)
            # pages_sharing (cheap) is never below the areas' saving (pagemap, ~50 ms of CPU):
            # read pagemap only once pages_sharing says the next threshold may have been crossed.
            if knob("pages_sharing") >= (0.95 * limit_pages if reached_at is None else limit_pages):
                saved = area_saved_pages(areas, pages)[0]
                if reached_at is None and saved >= 0.95 * limit_pages:
                    reached_at = time.monotonic() - started
        saved = area_saved_pages(areas, pages)[0]
        sharing = knob("pages_sharing") / limit_pages
        ticks = ksmd_ticks()
        time.sleep(10)
        cpu = (ksmd_ticks() - ticks) / TICK / 10 * 100
        return reached_at, saved / limit_pages, sharing, cpu
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            proc.stdout.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--limit-seconds", type=float, default=60)
    args = parser.parse_args()
    ensure_preload()
    print("merge_efficacy: %d workers x %d MiB (limit %d MiB), %s, %d cores, %s" % (
        args.workers, args.mib, (args.workers - 1) * args.mib, platform.platform(), os.cpu_count(),
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())), flush=True)
    rows = []
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        print("  kernel lock held from %s; load average %.2f %.2f %.2f" % (
            (time.strftime("%H:%M:%S UTC", time.gmtime()),) + os.getloadavg()), flush=True)
        saved = ksm_knobs.save()
        try:
            for name, values in profiles():
                reached, fraction, sharing, cpu = measure(values, args.workers, args.mib, args.limit_seconds)
                settings = ", ".join("%s=%s" % kv for kv in sorted(values.items()) if kv[0] != "run")
                rows.append((name, settings, reached, fraction, sharing, cpu))
                print("  %-12s 95 %% at %s, %.1f %% of the limit, ksmd %.1f %% CPU" % (
                    name, "%.1f s" % reached if reached is not None else "-", fraction * 100, cpu), flush=True)
        finally:
            ksm_knobs.restore(saved)
    print()
    print("| profile | settings | time to 95 %% of limit (s) | fraction of limit within %g s | pages_sharing / limit | ksmd CPU %% (10 s after) |"
          % args.limit_seconds)
    print("|---|---|--:|--:|--:|--:|")
    for name, settings, reached, fraction, sharing, cpu in rows:
        print("| %s | %s | %s | %.1f %% | %.1f %% | %.1f |" % (
            name, settings, "%.1f" % reached if reached is not None else "> %g" % args.limit_seconds,
            fraction * 100, sharing * 100, cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
