#!/usr/bin/env python
"""Accuracy and cost of the KSM savings estimate (module_utils/_estimate), against what KSM really merges.

    .venv/bin/python benchmarks/estimate_accuracy.py [--mib 128] [--procs 4] [--cost-mib 2048] [--skip-containers]
        [--only identical,partial,unique,zero,containers] [--skip-cost]

Workloads with a known duplicate structure (tests/tools/estimate_worker.py: every process
opts in to KSM with prctl(PR_SET_MEMORY_MERGE) before it fills private anonymous memory):
  identical   every page has a content shared by all processes (page i alike in every process)
  partial     half the pages shared, half unique to each process
  unique      every page unique
  zero        half the pages written with zeros, half unique - with use_zero_pages 0 and 1
  containers  the partial+zero workload in podman containers (one process per container)
For each: KSM off (run=2), estimate at the default sampling and at forced rates 1/4, 1/16, 1/64
(each estimate in its own process, which prints its peak RSS); then the aggressive profile
(pages_to_scan 5000, sleep_millisecs 20) until the merged count is steady over two full scans,
and the estimate is compared with what KSM merged on the workload's processes: the mappings of
KSM pages (pagemap + /proc/kpageflags KPF_KSM) minus the distinct KSM pages behind them, plus
their ksm_zero_pages (/proc/PID/ksm_stat). The global pages_sharing + ksm_zero_pages is printed too.
Cost: CPU s/GiB and peak RSS of one estimate over COST_MIB of candidates (KSM stays off).
Holds the kernel lock; restores every knob afterwards; removes its containers.
"""
import argparse
import fcntl
import json
import mmap
import os
import pathlib
import struct
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
import ksm_knobs  # noqa: E402

SYSFS = pathlib.Path("/sys/kernel/mm/ksm")
LOCK = "/run/lock/samepage-ksm-kernel.lock"
PAGE = mmap.PAGESIZE
IMAGE = "localhost/samepage-rpmbase:bookworm"
AGGRESSIVE = {"pages_to_scan": 5000, "sleep_millisecs": 20}
# (label, sample, max_entries): the defaults, forced slices, and a 2048-entry table that makes the
# adaptive sampling climb on these small workloads (a sample 32 times smaller than the default
# table holds when it climbs on a big host: a pessimistic view of the defaults' higher rates).
RATES = [("default", 1, 65536), ("1/4", 4, 65536), ("1/16", 16, 65536), ("1/64", 64, 65536),
         ("adaptive, 2048 entries", 1, 2048)]
KPF_KSM = 1 << 21
PFN_MASK = (1 << 55) - 1

WORKER = ROOT / "tests" / "tools" / "estimate_worker.py"

DRIVER = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from ansible.module_utils import basic  # noqa: F401  (the module's process imports it too)
from ansible_collections.samepage.ksm.plugins.module_utils import _estimate
args = json.loads(sys.argv[2])
selector = _estimate.Selector(pids=args["pids"])
candidates, _denied = _estimate.find_candidates("/proc", selector)
result = _estimate.estimate(candidates, use_zero_pages=args["use_zero_pages"], sample=args["sample"],
                            max_entries=args["max_entries"], top=20)
result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(result))
"""


def knob(name):
    return int((SYSFS / name).read_text().split()[0])


def podman(*args, check=True):
    env = dict(os.environ, CONTAINERS_CONF=str(ROOT / "tests" / "podman" / "containers.conf"))
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True, check=check)


class Workload:
    """Worker processes on the host or in podman containers; stopped on exit."""

    def __init__(self, name, procs, mib, shared, zero, containers=False):
        self.name, self.procs, self.mib, self.shared, self.zero = name, procs, mib, shared, zero
        self.containers = containers
        self.children, self.names, self.pids = [], [], []
        self.script = str(WORKER)

    def __enter__(self):
        args = [str(self.mib), str(self.shared), str(self.zero)]
        for index in range(self.procs):
            if self.containers:
                name = "estimate-bench-%d" % index
                podman("rm", "-f", name, check=False)
                podman("run", "-d", "--name", name, "-v", "%s:/worker.py:ro" % self.script, IMAGE,
                       "python3", "/worker.py", *args, str(index + 1))
                self.names.append(name)
            else:
                child = subprocess.Popen([sys.executable, self.script, *args, str(index + 1)],
                                         stdout=subprocess.PIPE, text=True)
                self.children.append(child)
        deadline = time.monotonic() + 120
        if self.containers:
            for name in self.names:
                while "ready" not in podman("logs", name).stdout:
                    if time.monotonic() > deadline:
                        raise SystemExit("container %s did not get ready: %s" % (name, podman("logs", name).stderr))
                    time.sleep(0.3)
                self.pids.append(int(podman("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()))
        else:
            for child in self.children:
                if child.stdout.readline().strip() != "ready":
                    raise SystemExit("worker %d did not start" % child.pid)
                self.pids.append(child.pid)
        return self

    def __exit__(self, *exc):
        for child in self.children:
            child.kill()
            child.wait()
            child.stdout.close()
        for name in self.names:
            podman("rm", "-f", "-t", "0", name, check=False)
        return False


def run_estimate(pids, use_zero_pages, sample, max_entries=65536):
    args = {"pids": pids, "use_zero_pages": use_zero_pages, "sample": sample, "max_entries": max_entries}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT / "build" / "collections"), json.dumps(args)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def merged_pages(pids):
    """(pages KSM saved on these processes, sum of their ksm_merging_pages) from pagemap + kpageflags + ksm_stat."""
    mappings = 0
    frames = set()
    zero = 0
    stat_merging = 0
    with open("/proc/kpageflags", "rb", 0) as flags:
        for pid in pids:
            stat = dict(line.replace(":", " ").split()[:2] for line in open("/proc/%d/ksm_stat" % pid) if line.strip())
            zero += int(stat.get("ksm_zero_pages", 0))
            stat_merging += int(stat.get("ksm_merging_pages", 0))
            with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/pagemap" % pid, "rb", 0) as pagemap:
                for line in maps:
                    fields = line.split()
                    if fields[1][3] != "p":
                        continue
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    for address in range(start, end, 16384 * PAGE):
                        count = min(16384, (end - address) // PAGE)
                        pagemap.seek(address // PAGE * 8)
                        data = pagemap.read(count * 8)
                        for entry in struct.unpack("<%dQ" % (len(data) // 8), data):
                            # present, anonymous, not exclusive: a KSM page is one of those
                            if entry >> 63 and not entry >> 61 & 1 and not entry >> 56 & 1:
                                pfn = entry & PFN_MASK
                                flags.seek(pfn * 8)
                                if struct.unpack("<Q", flags.read(8))[0] & KPF_KSM:
                                    mappings += 1
                                    frames.add(pfn)
    return mappings - len(frames) + zero, stat_merging


def merge_until_steady(pids, limit=180):
    """Aggressive ksmd until the workload's merged count is unchanged over two full scans."""
    for name, value in AGGRESSIVE.items():
        ksm_knobs.write(name, value)
    ksm_knobs.write("run", 1)
    started = time.monotonic()
    last, last_scan, stable = None, knob("full_scans"), 0
    while time.monotonic() - started < limit:
        time.sleep(1)
        scans = knob("full_scans")
        if scans < last_scan + 1:
            continue
        saved, _stat = merged_pages(pids)
        if last is not None and abs(saved - last) <= max(2, 0.002 * saved):
            stable += 1
            if stable >= 2:
                return saved, time.monotonic() - started
        else:
            stable = 0
        last, last_scan = saved, scans
    return merged_pages(pids)[0], time.monotonic() - started


def accuracy(name, procs, mib, shared, zero, use_zero_pages=0, containers=False):
    ksm_knobs.write("run", 2)
    ksm_knobs.write("use_zero_pages", use_zero_pages)
    with Workload(name, procs, mib, shared, zero, containers) as work:
        estimates = [(label, run_estimate(work.pids, bool(use_zero_pages), rate, entries))
                     for label, rate, entries in RATES]
        global_before = knob("pages_sharing") + knob("ksm_zero_pages")
        saved, seconds = merge_until_steady(work.pids)
        global_after = knob("pages_sharing") + knob("ksm_zero_pages")
        _again, stat_merging = merged_pages(work.pids)
        ksm_knobs.write("run", 2)
    rows = []
    for label, est in estimates:
        error = 100.0 * (est["saving_pages"] - saved) / saved if saved else float("nan")
        rows.append({"workload": name, "rate": label, "final_rate": est["sample"]["final"],
                     "scanned_mib": est["scanned_mib"], "estimate_mib": est["saving_mib"],
                     "stderr_mib": est["saving_stderr_mib"],
                     "merged_mib": round(saved * PAGE / 2**20, 2), "error_pct": round(error, 2),
                     "global_mib": round((global_after - global_before) * PAGE / 2**20, 2),
                     "steady_s": round(seconds, 1), "cpu_s_per_gib": est["cpu_seconds_per_gib"],
                     "peak_rss_mib": round(est["peak_rss_kib"] / 1024, 1), "groups": est["groups"],
                     "stat_merging": stat_merging})
    return rows


def cost(total_mib, procs):
    """CPU and RSS of one default estimate over total_mib of partly duplicated candidates (KSM not run)."""
    ksm_knobs.write("run", 2)
    with Workload("cost", procs, total_mib // procs, 0.3, 0.05) as work:
        runs = [run_estimate(work.pids, False, 1) for _run in range(2)]
    best = min(runs, key=lambda r: r["cpu_seconds"])
    return best, runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128, help="MiB per process in the accuracy workloads")
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--cost-mib", type=int, default=2048, help="MiB of candidates in the cost run")
    parser.add_argument("--skip-containers", action="store_true")
    parser.add_argument("--only", help="comma-separated workload names to run (identical, partial, unique, zero, containers)")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    if not os.access(SYSFS / "run", os.W_OK) or not os.access("/proc/kpageflags", os.R_OK):
        raise SystemExit("needs root on a KSM kernel (%s writable, /proc/kpageflags readable)" % SYSFS)
    workloads = [
        ("identical", args.procs, args.mib, 1.0, 0.0, 0, False),
        ("partial", args.procs, args.mib, 0.5, 0.0, 0, False),
        ("unique", args.procs, args.mib, 0.0, 0.0, 0, False),
        ("zero, use_zero_pages=0", args.procs, args.mib, 0.0, 0.5, 0, False),
        ("zero, use_zero_pages=1", args.procs, args.mib, 0.0, 0.5, 1, False),
    ]
    if not args.skip_containers:
        workloads.append(("containers (podman)", 3, args.mib, 0.5, 0.25, 0, True))
    if args.only:
        wanted = set(args.only.split(","))
        workloads = [w for w in workloads if w[0].split()[0].rstrip(",") in wanted]
    rows = []
    started = time.monotonic()
    with open(LOCK, "a") as lock:
        print("waiting for the kernel lock %s ..." % LOCK, flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved_knobs = ksm_knobs.save()
        try:
            for spec in workloads:
                rows.extend(accuracy(*spec))
                print("  %-24s done (%.0f s)" % (spec[0], time.monotonic() - started), flush=True)
            best, runs = cost(args.cost_mib, args.procs) if not args.skip_cost else (None, [])
        finally:
            ksm_knobs.restore(saved_knobs)
    print()
    print("Accuracy: estimate (before KSM) vs what KSM merged on the workload's processes at steady state")
    print("| workload | sampling | final 1/k | scanned MiB | estimate MiB | +- stderr MiB | merged MiB | error % "
          "| global delta MiB | steady after s |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    worst = 0.0
    for row in rows:
        worst = max(worst, abs(row["error_pct"]))
        print("| %s | %s | %d | %.1f | %.2f | %.2f | %.2f | %+.2f | %.2f | %.1f |" % (
            row["workload"], row["rate"], row["final_rate"], row["scanned_mib"], row["estimate_mib"], row["stderr_mib"],
            row["merged_mib"], row["error_pct"], row["global_mib"], row["steady_s"]))
    print("worst |error|: %.2f %% (goal <= 10 %%) -> %s" % (worst, "met" if worst <= 10 else "NOT met"))
    for row in rows:
        if abs(row["error_pct"]) > 10:
            print("  over 10 %%: %s at %s: estimate %.2f MiB vs merged %.2f MiB (difference %.2f MiB, %.3f %% of the %.1f MiB scanned)"
                  % (row["workload"], row["rate"], row["estimate_mib"], row["merged_mib"],
                     row["estimate_mib"] - row["merged_mib"],
                     100.0 * abs(row["estimate_mib"] - row["merged_mib"]) / row["scanned_mib"], row["scanned_mib"]))
    containers = [r for r in rows if r["workload"].startswith("containers") and r["rate"] == "default"]
    if containers:
        print()
        print("Per-container estimate (default sampling):")
        print("| kind | name | runtime | processes | scanned MiB | estimated saving MiB |")
        print("|---|---|---|--:|--:|--:|")
        for group in containers[0]["groups"]:
            print("| %s | %s | %s | %d | %.1f | %.2f |" % (
                group["kind"], group["name"] or group["id"][:12], group["runtime"], group["processes"],
                group["scanned_pages"] * PAGE / 2**20, group["saving_mib"]))
    if not runs:
        return 0
    print()
    print("Cost of one default estimate over %d MiB of candidates (%d processes; best of %d runs):"
          % (args.cost_mib, args.procs, len(runs)))
    print("| scanned MiB | CPU s | CPU s/GiB | wall s | peak RSS MiB | table entries / max | final 1/k |")
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for run in runs:
        print("| %.1f | %.2f | %.2f | %.2f | %.1f | %d / %d | %d |" % (
            run["scanned_mib"], run["cpu_seconds"], run["cpu_seconds_per_gib"], run["elapsed_seconds"],
            run["peak_rss_kib"] / 1024, run["sample"]["entries"], run["sample"]["max_entries"], run["sample"]["final"]))
    print("CPU goal <= 2 s/GiB: %s (best %.2f); RSS goal <= 64 MiB: %s (max %.1f)" % (
        "met" if best["cpu_seconds_per_gib"] <= 2 else "NOT met", best["cpu_seconds_per_gib"],
        "met" if max(r["peak_rss_kib"] for r in runs) / 1024 <= 64 else "NOT met",
        max(r["peak_rss_kib"] for r in runs) / 1024))
    print("load average at the end: %s; total %.0f s" % (" ".join(os.getloadavg().__repr__().strip("()").split(", ")),
                                                         time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
