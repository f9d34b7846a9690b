#!/usr/bin/env python
"""Convergence cost of the node role against its floors, on the same SSH fleet, in one session.

    .venv/bin/python benchmarks/converge_cost.py [--hosts 20 100] [--repeat 3] [--no-naive]

For each fleet size (tests/fleet/fleet.py: every host a ksm_nodes host with its own fake KSM
directory; the real kernel is not touched), in one session:

- ping floor: one ansible.builtin.ping task (the least a Python module costs per host);
- raw floor: one ansible.builtin.raw task that writes the balanced knobs and an rc.local block
  (no Python on the host at all);
- naive: benchmarks/naive_seed.yml (the seed by hand), first run on fresh hosts and a re-run;
- role: playbooks/node.yml (profile balanced, rc.local persistence), first run on fresh hosts
  and a re-run.

The ping floor and the role re-run alternate --repeat times on the same hosts and the ratios are
of medians, so the machine's load moving during the session hits floor and role alike. Prints
wall seconds (median, range, runs), tasks per host (ok + failed in one host's recap; skipped tasks are not
counted) and each run's ratio to the ping floor of the same size. Goal at 100 hosts: role first
run <= 1.5x ping, re-run <= 1.25x ping. Forks = hosts. The figures are measured, never asserted.
"""
import argparse
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLEET = [sys.executable, str(ROOT / "tests" / "fleet" / "fleet.py")]
STATE = pathlib.Path("/var/tmp/samepage-bench-fleet")
# Its own loopback network (127.0.2.11-...): the benchmark can run beside the fleet scenario.
NETWORK = "127.0.2"
ENV = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
           ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"), ANSIBLE_FORCE_COLOR="0")
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

PING = """---
- name: Ping floor
  hosts: ksm_nodes
  gather_facts: false
  tasks:
    - name: One Python module round trip
      ansible.builtin.ping:
"""

# The balanced knobs and an rc.local block, in one shell line per host: no Python on the host.
RAW = """---
- name: Raw floor
  hosts: ksm_nodes
  gather_facts: false
  tasks:
    - name: Knobs and rc.local in one raw command
      ansible.builtin.raw: >-
        echo none > /sys/kernel/mm/ksm/advisor_mode; echo 1000 > /sys/kernel/mm/ksm/pages_to_scan;
        echo 50 > /sys/kernel/mm/ksm/sleep_millisecs; echo 1 > /sys/kernel/mm/ksm/run;
        printf '#!/bin/sh\\n# BEGIN ksm\\necho 1000 > /sys/kernel/mm/ksm/pages_to_scan\\necho 50 >
        /sys/kernel/mm/ksm/sleep_millisecs\\necho 1 > /sys/kernel/mm/ksm/run\\n# END ksm\\nexit 0\\n'
        > /etc/rc.local; chmod 755 /etc/rc.local
"""


def playbook(path, inventory, forks):
    started = time.monotonic()
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), "-f", str(forks),
         "-e", "ksm_node_profile=balanced", str(path)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit("%s failed:\n%s" % (path, proc.stdout[-4000:] + proc.stderr[-2000:]))
    recap = RECAP.findall(proc.stdout)
    host = recap[0]
    tasks = int(host[1]) + int(host[4])  # ok already counts changed tasks
    changed = sum(int(r[2]) for r in recap)
    return dict(seconds=seconds, tasks=tasks, changed=changed)


class Fleet(object):
    """Fresh hosts for one side of the comparison, torn down afterwards."""

    def __init__(self, hosts):
        self.hosts = hosts

    def __enter__(self):
        subprocess.run(FLEET + ["down", "--state", str(STATE)], check=False, capture_output=True)
        up = subprocess.run(FLEET + ["up", "--count", str(self.hosts), "--nodes", str(self.hosts), "--network",
                                     NETWORK, "--state", str(STATE), "--timeout", "180"],
                            check=False, capture_output=True, text=True)
        if up.returncode != 0:
            sys.exit("fleet up failed:\n" + up.stderr[-4000:])
        return STATE / "inventory.yml"

    def __exit__(self, *exc):
        subprocess.run(FLEET + ["down", "--state", str(STATE)], check=False, capture_output=True)


def measure(hosts, scratch, repeat, naive):
    """Each playbook's wall times on one fleet size. The ping floor and the role re-run alternate
    REPEAT times on the same hosts, so a change of the machine's load hits both alike; the first
    run (fresh hosts) happens once per fleet and is set against the median ping."""
    ping_path, raw_path = scratch / "ping.yml", scratch / "raw.yml"
    ping_path.write_text(PING)
    raw_path.write_text(RAW)
    runs = {name: [] for name in ("ping", "raw", "naive first", "naive re-run", "role first", "role re-run")}
    with Fleet(hosts) as inventory:
        runs["ping"].append(playbook(ping_path, inventory, hosts))   # changes nothing: fresh hosts stay fresh
        runs["role first"].append(playbook(ROOT / "playbooks" / "node.yml", inventory, hosts))
        for dummy in range(repeat):
            runs["role re-run"].append(playbook(ROOT / "playbooks" / "node.yml", inventory, hosts))
            runs["ping"].append(playbook(ping_path, inventory, hosts))
    if naive:
        with Fleet(hosts) as inventory:
            runs["naive first"].append(playbook(ROOT / "benchmarks" / "naive_seed.yml", inventory, hosts))
            runs["naive re-run"].append(playbook(ROOT / "benchmarks" / "naive_seed.yml", inventory, hosts))
            runs["raw"].append(playbook(raw_path, inventory, hosts))
            runs["ping"].append(playbook(ping_path, inventory, hosts))
    else:
        with Fleet(hosts) as inventory:
            runs["raw"].append(playbook(raw_path, inventory, hosts))
    for name, done in runs.items():
        for run in done:
            print("  %3d hosts  %-12s %7.1f s  %2d tasks/host  %4d changed"
                  % (hosts, name, run["seconds"], run["tasks"], run["changed"]), flush=True)
    return {name: done for name, done in runs.items() if done}


def median(runs):
    return statistics.median(run["seconds"] for run in runs)


def spread(runs):
    times = [run["seconds"] for run in runs]
    return "%.1f" % times[0] if len(times) == 1 else "%.1f (%.1f-%.1f, n=%d)" % (
        statistics.median(times), min(times), max(times), len(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--repeat", type=int, default=3, help="ping / role re-run pairs per fleet size")
    parser.add_argument("--no-naive", dest="naive", action="store_false",
                        help="leave out the naive seed playbook (the slowest part)")
    args = parser.parse_args()
    print("converge_cost: %s SSH hosts, %s, %d cores, load %s, %s" % (
        " and ".join(str(h) for h in args.hosts), platform.platform(), os.cpu_count(),
        " ".join("%.2f" % x for x in os.getloadavg()), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())), flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="samepage-bench-") as scratch:
        for hosts in args.hosts:
            results[hosts] = measure(hosts, pathlib.Path(scratch), args.repeat, args.naive)
    print("load at the end %s" % " ".join("%.2f" % x for x in os.getloadavg()))
    print()
    print("| hosts | playbook | wall s (median, min-max, runs) | tasks/host | / ping (medians) |")
    print("|--:|---|--:|--:|--:|")
    labels = (("ping", "one `ansible.builtin.ping` task (floor for Python modules)"),
              ("raw", "one `ansible.builtin.raw` task writing the knobs + rc.local"),
              ("naive first", "naive seed playbook, first run"), ("naive re-run", "naive seed playbook, re-run"),
              ("role first", "node role, first run"), ("role re-run", "node role, re-run"))
    for hosts, runs in results.items():
        ping = median(runs["ping"])
        for key, label in labels:
            if key in runs:
                row = (hosts, label, spread(runs[key]), runs[key][0]["tasks"], median(runs[key]) / ping)
                print("| %d | %s | %s | %d | %.2f |" % row)
    print()
    for hosts, runs in results.items():
        ping = median(runs["ping"])
        first, rerun = median(runs["role first"]) / ping, median(runs["role re-run"]) / ping
        print("%d hosts: role first run %.2fx ping (goal <= 1.5: %s), re-run %.2fx ping (goal <= 1.25: %s)" % (
            hosts, first, "met" if first <= 1.5 else "NOT met", rerun, "met" if rerun <= 1.25 else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
