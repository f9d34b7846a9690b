#!/usr/bin/env python
"""CPU and peak RSS of the KSM savings estimate (module_utils/_estimate), per target interpreter and candidate size.

    .venv/bin/python benchmarks/estimate_cost.py [--sizes 1,2,4,8,16] [--procs 4]
        [--interpreters 2.7.18,3.6.15,3.11.7] [--repeat 2] [--baseline REV] [--baseline-sizes 2]
        [--reserve-gib 4]

For each size S (GiB, ascending), --procs worker processes hold S GiB of private anonymous memory
between them (30 % of the pages alike in every worker, 5 % written zeros, the rest unique; the
workers do not opt in to KSM, so nothing merges them whatever ksmd does meanwhile). Then, per
interpreter (pyenv's Pythons of EL7 and EL8 and the controller's), one estimate at the default
sampling runs --repeat times, each in its own process laid out as on a target: ansible-core 2.16's
module_utils (the newest that still runs on Python 2.7 and 3.6; .venv-2.16, made by
`scripts/matrix.sh --venvs-only 2.16`) and the collection's, with
ansible.module_utils.basic imported as the module's process does. Printed per run: CPU seconds of
the estimate (user + system, the estimate's own cpu_seconds), CPU s per GiB scanned and its ratio
to the 2 s/GiB goal, and the process's peak RSS (ru_maxrss) and its ratio to the 64 MiB goal.

--baseline REV also runs the module_utils of git revision REV (at --baseline-sizes) in the same
session, for a before/after ratio on the same memory; the two must agree on every figure but the
timings (the speed-up keeps results identical), which the script checks and prints.

A size is skipped, with a message, when MemAvailable is below it plus --reserve-gib. Workers are
killed at the end of each size (and on any error). KSM knobs are never touched.
"""
import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYENV = pathlib.Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
CORE_216 = ROOT / ".venv-2.16"
CPU_GOAL = 2.0      # s of CPU per GiB scanned
RSS_GOAL = 64.0     # MiB of estimator RSS
GIB = 1 << 30

WORKER = ROOT / "tests" / "tools" / "estimate_worker.py"

# Python 2.7 / 3.6 clean: it runs on the targets' interpreters.
DRIVER = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from ansible.module_utils import basic  # noqa: F401  (the module's process imports it too)
from ansible_collections.samepage.ksm.plugins.module_utils import _estimate
pids = json.loads(sys.argv[2])
candidates, _denied = _estimate.find_candidates('/proc', _estimate.Selector(pids=pids))
result = _estimate.estimate(candidates, top=5, time_budget=3600)
result['peak_rss_kib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result['python'] = '%d.%d.%d' % sys.version_info[:3]
print(json.dumps(result))
"""

# Everything in the result but the timings and the process's own figures: equal between two versions
# of the code on the same memory, if the results are identical.
TIMINGS = ("elapsed_seconds", "cpu_seconds", "cpu_seconds_per_gib", "peak_rss_kib", "python")


def mem_available():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no MemAvailable in /proc/meminfo")


def layout(target, module_utils_files):
    """A lib dir as on a target: ansible (stub package) + module_utils of 2.16, and the collection's module_utils."""
    source = next((CORE_216 / "lib").glob("python3*/site-packages/ansible/module_utils"), None)
    if source is None:
        raise SystemExit("ansible-core 2.16 not found under %s (scripts/matrix.sh --venvs-only 2.16 makes it)" % CORE_216)
    ansible = target / "ansible"
    shutil.copytree(source, ansible / "module_utils", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (ansible / "__init__.py").write_text("")
    pkg = target / "ansible_collections" / "samepage" / "ksm" / "plugins" / "module_utils"
    pkg.mkdir(parents=True)
    for level in [pkg] + list(pkg.parents)[:4]:
        (level / "__init__.py").write_text("")
    for name, data in module_utils_files.items():
        (pkg / name).write_bytes(data)
    return target


def current_files():
    return {p.name: p.read_bytes() for p in (ROOT / "plugins" / "module_utils").glob("_*.py")}


def revision_files(rev):
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", rev, "plugins/module_utils/"],
                           capture_output=True, text=True, check=True).stdout.split()
    return {pathlib.PurePath(n).name: subprocess.run(["git", "-C", str(ROOT), "show", "%s:%s" % (rev, n)],
                                                     capture_output=True, check=True).stdout
            for n in names if pathlib.PurePath(n).name.startswith("_") and n.endswith(".py")}


def interpreter(spec):
    if os.sep in spec:
        return spec
    path = PYENV / spec / "bin" / "python"
    if not path.exists():
        raise SystemExit("no pyenv Python %s (%s); pyenv install %s" % (spec, path, spec))
    return str(path)


class Workers:
    """--procs processes holding size bytes of private anonymous memory between them; killed on exit."""

    def __init__(self, size, procs):
        self.size, self.procs, self.children = size, procs, []

    def __enter__(self):
        try:
            for seed in range(self.procs):
                self.children.append(subprocess.Popen(
                    [sys.executable, str(WORKER), "--no-merge", str(self.size // self.procs >> 20), "0.3", "0.05", str(seed + 1)],
                    stdout=subprocess.PIPE, text=True))
            for child in self.children:
                if child.stdout.readline().strip() != "ready":
                    raise SystemExit("worker %d did not start (rc %s)" % (child.pid, child.poll()))
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def pids(self):
        return [child.pid for child in self.children]

    def __exit__(self, *exc):
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()
        self.children = []
        return False


def run_driver(python, lib, pids):
    proc = subprocess.run([python, "-c", DRIVER, str(lib), json.dumps(pids)], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit("estimate on %s failed:\n%s" % (python, proc.stderr))
    return json.loads(proc.stdout)


def load():
    return "%.1f %.1f %.1f" % os.getloadavg()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4,8,16", help="GiB of candidates, comma-separated")
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--interpreters", default="2.7.18,3.6.15,3.11.7",
                        help="pyenv versions or interpreter paths, comma-separated")
    parser.add_argument("--repeat", type=int, default=2, help="estimates per interpreter and size (best CPU, worst RSS)")
    parser.add_argument("--baseline", help="git revision whose module_utils also run, for a before/after ratio")
    parser.add_argument("--baseline-sizes", default="2", help="sizes (GiB) at which the baseline runs")
    parser.add_argument("--reserve-gib", type=float, default=4.0, help="MemAvailable to keep beyond the workers")
    args = parser.parse_args()
    if not os.access("/proc/self/pagemap", os.R_OK) or os.geteuid() != 0:
        raise SystemExit("needs root (reads other processes' /proc/PID/pagemap and mem)")
    sizes = sorted(float(s) for s in args.sizes.split(","))
    baseline_sizes = set(float(s) for s in args.baseline_sizes.split(",")) if args.baseline else set()
    pythons = [interpreter(spec) for spec in args.interpreters.split(",")]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="estimate-cost-"))
    signal.signal(signal.SIGTERM, lambda *_a: sys.exit(143))
    rows, skipped = [], []
    started = time.monotonic()
    print("load average at the start: %s" % load(), flush=True)
    try:
        libs = {"current": layout(tmp / "current", current_files())}
        if args.baseline:
            libs[args.baseline] = layout(tmp / "baseline", revision_files(args.baseline))
        for size in sizes:
            need = size * GIB + args.reserve_gib * GIB
            if mem_available() < need:
                skipped.append((size, mem_available() / GIB))
                print("  %g GiB: skipped, MemAvailable %.1f GiB < %g + %g GiB reserve"
                      % (size, mem_available() / GIB, size, args.reserve_gib), flush=True)
                continue
            with Workers(int(size * GIB), args.procs) as work:
                for python in pythons:
                    for code, lib in libs.items():
                        if code != "current" and size not in baseline_sizes:
                            continue
                        runs = [run_driver(python, lib, work.pids) for _run in range(args.repeat)]
                        rows.append({"size": size, "code": code, "runs": runs, "load": load()})
                        best = min(runs, key=lambda r: r["cpu_seconds"])
                        print("  %g GiB  %-7s %-10s %.2f CPU s/GiB, peak RSS %.1f MiB (load %s, %.0f s)" % (
                            size, runs[0]["python"], code, best["cpu_seconds_per_gib"],
                            max(r["peak_rss_kib"] for r in runs) / 1024, rows[-1]["load"],
                            time.monotonic() - started), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("Cost of one estimate at the default sampling (best CPU / worst RSS of %d runs; %d worker processes):"
          % (args.repeat, args.procs))
    print("| Python | code | candidates GiB | scanned GiB | CPU s | CPU s/GiB | / 2 s/GiB goal | peak RSS MiB "
          "| / 64 MiB goal | final 1/k | table entries | wall s | complete |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    for row in rows:
        runs = row["runs"]
        best = min(runs, key=lambda r: r["cpu_seconds"])
        rss = max(r["peak_rss_kib"] for r in runs) / 1024
        print("| %s | %s | %g | %.2f | %.2f | %.2f | %.2f | %.1f | %.2f | %d | %d | %.1f | %s |" % (
            best["python"], row["code"], row["size"], best["scanned_bytes"] / GIB, best["cpu_seconds"],
            best["cpu_seconds_per_gib"], best["cpu_seconds_per_gib"] / CPU_GOAL, rss, rss / RSS_GOAL,
            best["sample"]["final"], best["sample"]["entries"], best["elapsed_seconds"],
            "yes" if all(r["complete"] for r in runs) else "NO (time budget)"))
    print()
    worst_cpu = max([min(r["cpu_seconds_per_gib"] for r in row["runs"]) for row in rows if row["code"] == "current"]
                    or [float("nan")])
    print("Per Python (current code): CPU s/GiB over the sizes, peak RSS over the sizes (flat = bounded):")
    for python in sorted(set(r["runs"][0]["python"] for r in rows)):
        mine = [r for r in rows if r["code"] == "current" and r["runs"][0]["python"] == python]
        cpus = [min(x["cpu_seconds_per_gib"] for x in r["runs"]) for r in mine]
        rsss = [max(x["peak_rss_kib"] for x in r["runs"]) / 1024 for r in mine]
        print("  %s: CPU %.2f-%.2f s/GiB (goal <= 2: %s); peak RSS %.1f-%.1f MiB at %g-%g GiB (goal <= 64: %s)" % (
            python, min(cpus), max(cpus), "met" if max(cpus) <= CPU_GOAL else "NOT met", min(rsss), max(rsss),
            mine[0]["size"], mine[-1]["size"], "met" if max(rsss) <= RSS_GOAL else "NOT met"))
    if args.baseline:
        print()
        print("Before/after on the same memory (%s -> current):" % args.baseline)
        for row in [r for r in rows if r["code"] == args.baseline]:
            python = row["runs"][0]["python"]
            now = [r for r in rows if r["code"] == "current" and r["size"] == row["size"]
                   and r["runs"][0]["python"] == python][0]
            before = min(x["cpu_seconds_per_gib"] for x in row["runs"])
            after = min(x["cpu_seconds_per_gib"] for x in now["runs"])
            same = all({k: v for k, v in a.items() if k not in TIMINGS} == {k: v for k, v in b.items() if k not in TIMINGS}
                       for a in row["runs"] for b in now["runs"])
            print("  %s at %g GiB: %.2f -> %.2f CPU s/GiB (x%.2f); peak RSS %.1f -> %.1f MiB; results identical: %s" % (
                python, row["size"], before, after, after / before,
                max(x["peak_rss_kib"] for x in row["runs"]) / 1024, max(x["peak_rss_kib"] for x in now["runs"]) / 1024,
                "yes" if same else "NO"))
    for size, available in skipped:
        print("not measured: %g GiB (MemAvailable was %.1f GiB)" % (size, available))
    print("worst CPU s/GiB (current code): %.2f; load average at the end: %s; total %.0f s"
          % (worst_cpu, load(), time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
