#!/usr/bin/env python
"""The seed's stack for real: N podman containers, each running MariaDB, Apache + mod_php and
memcached from Debian bookworm (started by their own SysV init scripts), opted in to KSM by the
collection's container role (playbooks/container.yml) and merged by the node role
(playbooks/node.yml against this machine's real kernel, under the kernel lock).

    benchmarks/real_stack.py [--n 8] [--mechanisms control,preload,preload-low,prctl,prctl@aggressive]
                             [--profile balanced] [--seconds 240] [--ci]

Per mechanism, in one session, one after the other on the same kernel:
  control      no opt-in at all (same containers, same warm-up)
  preload      the real ksm_preload 0.10-3.el6 RPM (dnf download + rpm -i --nodeps), default
               KSMP_MERGE_THRESHOLD (32 KiB)
  preload-low  the same with KSMP_MERGE_THRESHOLD=4096
  prctl        the whole process via the samepage-ksm-merge launcher (PR_SET_MEMORY_MERGE)
  memoryksm    systemd's MemoryKSM=yes (needs systemd >= 256 in the containers; SysV here: skipped
               with the reason ksm_optin_info gives)
  auto         what ksm_container_optin: auto picks on this host
Each run: start N containers, warm them (same schema and rows, pages served, cache filled), opt
the services in with the role (no restart), reboot the containers (podman restart: every
service starts with its opt-in), warm again, then turn KSM on with the node role and sample every
few seconds: the services' RSS/PSS (smaps_rollup), pages_sharing, general_profit, per-service
ksm_stat, ksmd CPU (over the whole run, and from the steady state on: what the profile costs once
merging is done, as after the boot boost relaxes). Steady state: pages_sharing stays within 2 %
for 30 s. At the end: the
physical limit, i.e. how many of the services' private anonymous present pages are duplicates
(content hash of every page through /proc/PID/pagemap + /proc/PID/mem), every service's health
(a query answers, a page serves, memcached answers), then the knobs are put back and the
containers removed. Prints one table; writes build/results/real_stack.json (--ci: real_stack_ci.json).

--ci: N=4, control + what auto picks, shorter sampling; asserts that the chosen mechanism is in
effect in every service (the real library in the maps of MariaDB when preload), that merging on
the kernel beats the control, and that every service is healthy. Exits 1 otherwise.
"""
import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "localhost/samepage-stack:bookworm"
SYSFS = "/sys/kernel/mm/ksm"
LOCK = "/run/lock/samepage-ksm-kernel.lock"
PREFIX = "samepage-stack-bench"
DEFAULT_OUT = os.path.join(ROOT, "build/results/real_stack.json")
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1048576.0
SERVICES = ["mariadb", "apache2", "memcached"]
# Process names of each service's processes (main and children).
COMMS = {"mariadb": ("mariadbd",), "apache2": ("apache2",), "memcached": ("memcached",)}
REAL_LIBRARY = "/usr/lib64/libksm_preload.so.0.0.0"
ENV = dict(os.environ)
ENV.update({
    "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
    "CONTAINERS_CONF": ENV.get("CONTAINERS_CONF", os.path.join(ROOT, "tests/podman/containers.conf")),
    "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, "build/collections"),
    "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
    "PATH": os.path.join(ROOT, ".venv/bin") + os.pathsep + ENV.get("PATH", ""),
})

WARM_SQL = """
CREATE DATABASE IF NOT EXISTS samepage;
USE samepage;
CREATE TABLE IF NOT EXISTS items (id INT PRIMARY KEY, grp INT, payload VARCHAR(255), KEY (grp)) ENGINE=InnoDB;
INSERT IGNORE INTO items SELECT seq, seq % 1000, REPEAT(CONCAT('samepage-row-', seq % 997, '-'), 12) FROM seq_1_to_300000;
CREATE USER IF NOT EXISTS 'samepage'@'localhost' IDENTIFIED BY 'samepage';
GRANT SELECT ON samepage.* TO 'samepage'@'localhost';
SELECT COUNT(*), SUM(LENGTH(payload)) FROM items;
SELECT grp, COUNT(*) FROM items GROUP BY grp ORDER BY grp LIMIT 3;
"""
WARM_PY = r"""
import socket, urllib.request
for i in range(60):
    body = urllib.request.urlopen('http://127.0.0.1/', timeout=10).read()
assert body.startswith(b'items=300000'), body
s = socket.create_connection(('127.0.0.1', 11211), timeout=10)
f = s.makefile('rwb')
value = (b'samepage-cache-value-' * 50)[:1000]
for i in range(30000):
    f.write(b'set key%d 0 0 %d\r\n%s\r\n' % (i, len(value), value))
f.flush()
ok = 0
for i in range(30000):
    if f.readline() == b'STORED\r\n':
        ok += 1
assert ok == 30000, ok
print('warm', len(body), ok)
"""
HEALTH_PY = r"""
import json, socket, subprocess, urllib.request
out = {}
try:
    out['page'] = urllib.request.urlopen('http://127.0.0.1/', timeout=10).read().startswith(b'items=300000')
except Exception as exc:
    out['page'] = False
try:
    q = subprocess.run(['mariadb', '-N', '-e', 'SELECT COUNT(*) FROM samepage.items'], capture_output=True, text=True, timeout=30)
    out['query'] = q.stdout.strip() == '300000'
except Exception:
    out['query'] = False
try:
    s = socket.create_connection(('127.0.0.1', 11211), timeout=10)
    s.sendall(b'get key7\r\n')
    out['cache'] = s.recv(4096).startswith(b'VALUE key7')
except Exception:
    out['cache'] = False
print(json.dumps(out))
"""


def log(msg):
    sys.stderr.write("==> real_stack: %s\n" % msg)
    sys.stderr.flush()


def run(argv, check=True, **kw):
    proc = subprocess.run(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError("%s failed (rc %d): %s %s"
                           % (" ".join(argv[:6]), proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
    return proc


def podman(*args, **kw):
    return run(["podman"] + list(args), **kw)


def knob(name):
    with open(os.path.join(SYSFS, name)) as handle:
        return int(handle.read().split()[0])


def ksmd_ticks():
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/comm" % pid) as handle:
                    if handle.read().strip() != "ksmd":
                        continue
                with open("/proc/%s/stat" % pid) as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                return int(fields[11]) + int(fields[12])
            except OSError:
                continue
    return 0


def service_pids(name):
    """Host PIDs of the stack's processes in container NAME: {service: [pid, ...]}."""
    out = podman("top", name, "hpid", "comm").stdout.splitlines()[1:]
    pids = {svc: [] for svc in SERVICES}
    for line in out:
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        for svc, comms in COMMS.items():
            if parts[1] in comms:
                pids[svc].append(int(parts[0]))
    return pids


def smaps_rollup(pid):
    values = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as handle:
            for line in handle:
                match = re.match(r"^(\w+):\s+(\d+) kB", line)
                if match:
                    values[match.group(1)] = int(match.group(2)) * 1024
    except OSError:
        pass
    return values


def ksm_stat(pid):
    values = {}
    try:
        with open("/proc/%d/ksm_stat" % pid) as handle:
            for line in handle:
                key, dummy, value = line.replace(":", " ").partition(" ")
                values[key] = value.strip()
    except OSError:
        pass
    return values


def maps_library(pid):
    try:
        with open("/proc/%d/maps" % pid) as handle:
            return REAL_LIBRARY in handle.read()
    except OSError:
        return False


def anon_vmas(pid):
    """Private anonymous writable mappings (heap, anonymous mmap): what KSM could merge."""
    vmas = []
    with open("/proc/%d/maps" % pid) as handle:
        for line in handle:
            parts = line.split()
            start, end = (int(x, 16) for x in parts[0].split("-"))
            perms = parts[1]
            path = parts[5] if len(parts) > 5 else ""
            if perms[1] != "w" or perms[3] != "p":
                continue
            if path and path not in ("[heap]",) and not path.startswith("[anon"):
                continue
            if path.startswith("[stack") or path in ("[vvar]", "[vdso]", "[vsyscall]"):
                continue
            vmas.append((start, end))
    return vmas


def duplicate_limit(pids):
    """The services' private anonymous present pages: how many, how many distinct page frames
    (fork's copy-on-write and KSM map one frame many times) and distinct contents. KSM can at
    best bring the frames down to the contents: limit = frames - contents; what it saved so far
    shows as fewer frames than pages."""
    seen = set()
    frames = set()
    present = 0
    for pid in pids:
        try:
            pagemap = open("/proc/%d/pagemap" % pid, "rb")
            mem = open("/proc/%d/mem" % pid, "rb", buffering=0)
        except OSError:
            continue
        with pagemap, mem:
            try:
                vmas = anon_vmas(pid)
            except OSError:
                continue
            for start, end in vmas:
                npages = (end - start) // PAGE
                try:
                    pagemap.seek(start // PAGE * 8)
                    entries = pagemap.read(npages * 8)
                except OSError:
                    continue
                for i in range(len(entries) // 8):
                    (entry,) = struct.unpack_from("<Q", entries, i * 8)
                    if not entry >> 63 & 1:  # not present in RAM
                        continue
                    frames.add(entry & ((1 << 55) - 1))
                    addr = start + i * PAGE
                    try:
                        mem.seek(addr)
                        data = mem.read(PAGE)
                    except OSError:
                        continue
                    if len(data) != PAGE:
                        continue
                    present += 1
                    seen.add(hashlib.blake2b(data, digest_size=16).digest())
    return {"present_pages": present, "frames": len(frames), "distinct_pages": len(seen),
            "shared_pages": present - len(frames), "limit_pages": len(frames) - len(seen)}


class Kernel(object):
    """Holds the kernel lock; saves the knobs first and puts them back at the end."""

    def __init__(self, state_file):
        self.state_file = state_file
        self.handle = None

    def __enter__(self):
        self.handle = open(LOCK, "w")
        log("waiting for the kernel lock %s" % LOCK)
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        run([sys.executable, os.path.join(ROOT, "tests/tools/ksm_knobs.py"), "save", self.state_file])
        return self

    def unmerge(self):
        with open(os.path.join(SYSFS, "run"), "w") as handle:
            handle.write("2")

    def __exit__(self, *exc):
        run([sys.executable, os.path.join(ROOT, "tests/tools/ksm_knobs.py"), "restore", self.state_file], check=False)
        self.handle.close()


def node_role(workdir, profile):
    """Enable KSM on this machine with the node role (no persistence written: backend none)."""
    inv = os.path.join(workdir, "node.ini")
    with open(inv, "w") as handle:
        handle.write("[ksm_nodes]\nlocalhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    run(["ansible-playbook", "-i", inv, os.path.join(ROOT, "playbooks/node.yml"), "-e",
         json.dumps({"ksm_node_profile": profile, "ksm_node_persist_backend": "none",
                     "ksm_node_competing": "warn"})])


def container_role(workdir, names, mechanism):
    """Opt the services in with the container role; returns {host: ksm_container_result}."""
    inv = os.path.join(workdir, "containers.ini")
    with open(inv, "w") as handle:
        handle.write("[ksm_containers]\n")
        for name in names:
            handle.write("%s ansible_connection=containers.podman.podman ansible_python_interpreter=/usr/bin/python3\n" % name)
    optin = {"preload": "preload", "preload-low": "preload"}.get(mechanism, mechanism)
    extra = {
        "ksm_container_optin": optin,
        "ksm_container_service_names": SERVICES,
        "ksm_container_restart": False,
    }
    if mechanism == "preload-low":
        extra["ksm_container_merge_threshold"] = 4096
    dump = os.path.join(workdir, "result-")
    play = os.path.join(workdir, "optin.yml")
    with open(play, "w") as handle:
        handle.write("""---
- name: Opt the stack's services in
  ansible.builtin.import_playbook: %s
- name: Keep each host's result
  hosts: ksm_containers
  gather_facts: false
  tasks:
    - name: Write the result on the controller
      ansible.builtin.copy:
        content: "{{ ksm_container_result | to_json }}"
        dest: "%s{{ inventory_hostname }}.json"
        mode: "0644"
      delegate_to: localhost
""" % (os.path.join(ROOT, "playbooks/container.yml"), dump))
    run(["ansible-playbook", "-i", inv, play, "-f", str(len(names)), "-e", json.dumps(extra)])
    results = {}
    for name in names:
        with open(dump + name + ".json") as handle:
            results[name] = json.load(handle)
    return results


def wait_healthy(names, timeout=180):
    deadline = time.time() + timeout
    pending = list(names)
    while pending and time.time() < deadline:
        for name in list(pending):
            proc = podman("exec", name, "sh", "-c",
                          "test -S /run/mysqld/mysqld.sock && mariadb -N -e 'SELECT 1' >/dev/null 2>&1"
                          " && python3 -c \"import urllib.request, urllib.error\ntry: urllib.request.urlopen('http://127.0.0.1/', timeout=5)\n"
                          "except urllib.error.HTTPError: pass\" && echo up", check=False)
            if proc.stdout.strip() == "up":
                pending.remove(name)
        if pending:
            time.sleep(2)
    if pending:
        raise RuntimeError("services did not come up in %s" % pending)


def parallel(func, names):
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return list(pool.map(func, names))


def warm(names):
    parallel(lambda name: podman("exec", "-i", name, "mariadb", input=WARM_SQL), names)
    parallel(lambda name: podman("exec", name, "python3", "-c", WARM_PY), names)


def health(names):
    out = {}
    for name in names:
        proc = podman("exec", name, "python3", "-c", HEALTH_PY, check=False)
        try:
            out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out[name] = {"page": False, "query": False, "cache": False}
    return out


def memory(names):
    totals = {"rss": 0, "pss": 0, "anon": 0}
    per_service = {svc: {"rss": 0, "pss": 0, "merging_pages": 0, "profit": 0, "opted_in": 0, "processes": 0,
                         "maps_library": 0} for svc in SERVICES}
    pids = []
    for name in names:
        for svc, plist in service_pids(name).items():
            for pid in plist:
                roll = smaps_rollup(pid)
                stat = ksm_stat(pid)
                entry = per_service[svc]
                entry["rss"] += roll.get("Rss", 0)
                entry["pss"] += roll.get("Pss", 0)
                entry["processes"] += 1
                entry["merging_pages"] += int(stat.get("ksm_merging_pages", 0) or 0)
                entry["profit"] += int(stat.get("ksm_process_profit", 0) or 0)
                if stat.get("ksm_merge_any") == "yes" or stat.get("ksm_mergeable") == "yes":
                    entry["opted_in"] += 1
                if maps_library(pid):
                    entry["maps_library"] += 1
                totals["rss"] += roll.get("Rss", 0)
                totals["pss"] += roll.get("Pss", 0)
                totals["anon"] += roll.get("Anonymous", 0)
                pids.append(pid)
    return totals, per_service, pids


def start(names, real_repo):
    podman("rm", "-f", "-t", "0", *names, check=False)
    for name in names:
        podman("run", "-d", "--name", name, "--hostname", name, IMAGE)
    for name in names:
        if real_repo:
            # The containers' configured repository offers the real package, as CentOS's base did.
            podman("exec", name, "sh", "-c", "sed -i 's/^enabled=.*/enabled=0/' /etc/yum.repos.d/samepage-fixtures.repo"
                   " && sed -i 's/^enabled=.*/enabled=1/' /etc/yum.repos.d/samepage-real.repo")
    wait_healthy(names)


def one_run(args, mechanism, profile, kernel, workdir):
    names = ["%s-%s-%d" % (PREFIX, mechanism, i) for i in range(args.n)]
    result = {"mechanism": mechanism, "n": args.n, "profile": profile}
    if mechanism == "memoryksm" and "systemd" not in IMAGE:
        raise RuntimeError("not measured: the stack containers boot SysV init scripts; MemoryKSM needs systemd as"
                           " PID 1 (>= 256, where ksm_optin_info's transient unit proves it)")
    try:
        log("%s: starting %d containers" % (mechanism, args.n))
        t0 = time.time()
        start(names, real_repo=True)
        log("%s: warming (rows, pages, cache) after %.0f s" % (mechanism, time.time() - t0))
        warm(names)
        if mechanism != "control":
            log("%s: container role" % mechanism)
            role = container_role(workdir, names, mechanism)
            first = role[names[0]]
            result["optin"] = first.get("optin")
            result["optin_reason"] = first.get("optin_reason")
            result["library"] = first.get("library")
        else:
            result["optin"] = "none"
        # Reboot: every service starts through its init script with its opt-in.
        log("%s: rebooting the containers after %.0f s" % (mechanism, time.time() - t0))
        podman("restart", "-t", "10", *names)
        wait_healthy(names)
        warm(names)
        result["setup_seconds"] = round(time.time() - t0, 1)
        before, per_service, pids = memory(names)
        result["rss_mib"] = round(before["rss"] / MIB, 1)
        result["pss_mib"] = round(before["pss"] / MIB, 1)
        result["anon_mib"] = round(before["anon"] / MIB, 1)
        result["opted_in"] = {svc: "%d/%d" % (v["opted_in"], v["processes"]) for svc, v in per_service.items()}
        result["maps_real_library"] = {svc: "%d/%d" % (v["maps_library"], v["processes"]) for svc, v in per_service.items()}
        kernel.unmerge()
        time.sleep(1)
        start_pages = duplicate_limit(pids)
        result["pages_at_start"] = start_pages
        log("%s: node role (profile %s)" % (mechanism, profile))
        ticks0, t_on = ksmd_ticks(), time.time()
        node_role(workdir, profile)
        samples = []
        steady_at = None
        while True:
            time.sleep(args.interval)
            now = time.time() - t_on
            profit = knob("general_profit") if os.path.exists(os.path.join(SYSFS, "general_profit")) else 0
            samples.append({"t": round(now, 1), "pages_sharing": knob("pages_sharing"),
                            "pages_shared": knob("pages_shared"), "general_profit_mib": round(profit / MIB, 1),
                            "full_scans": knob("full_scans"), "ksmd_ticks": ksmd_ticks(), "wall": time.time()})
            window = [s for s in samples if s["t"] >= now - 30]
            if steady_at is None and now >= 30 and samples[-1]["pages_sharing"] > 0:
                low = min(s["pages_sharing"] for s in window)
                high = max(s["pages_sharing"] for s in window)
                if high and (high - low) <= 0.02 * high:
                    steady_at = window[0]["t"]
            if now >= args.seconds or (steady_at is not None and now >= steady_at + 30 + args.extra):
                break
            if mechanism == "control" and now >= args.control_seconds:
                break
        ticks1, t_end = ksmd_ticks(), time.time()
        hz = os.sysconf("SC_CLK_TCK")
        result["samples"] = samples
        result["seconds"] = round(t_end - t_on, 1)
        result["steady_seconds"] = steady_at
        result["ksmd_cpu_pct"] = round(100.0 * (ticks1 - ticks0) / hz / (t_end - t_on), 1)
        # ksmd's cost once merging is steady, at the profile's settings (what a node pays after the
        # boot boost relaxes): the samples from the steady state on; none when it never got steady.
        result["ksmd_cpu_steady_pct"] = None
        if steady_at is not None:
            window = [s for s in samples if s["t"] >= steady_at]
            if len(window) >= 2 and window[-1]["wall"] > window[0]["wall"]:
                result["ksmd_cpu_steady_pct"] = round(100.0 * (window[-1]["ksmd_ticks"] - window[0]["ksmd_ticks"]) / hz
                                                      / (window[-1]["wall"] - window[0]["wall"]), 1)
        last = samples[-1]
        result["pages_sharing"] = last["pages_sharing"]
        result["general_profit_mib"] = last["general_profit_mib"]
        result["saved_mib"] = round(last["pages_sharing"] * PAGE / MIB, 1)
        after, per_service, pids = memory(names)
        result["per_service"] = {svc: {"merging_mib": round(v["merging_pages"] * PAGE / MIB, 1),
                                       "profit_mib": round(v["profit"] / MIB, 1),
                                       "rss_mib": round(v["rss"] / MIB, 1)} for svc, v in per_service.items()}
        log("%s: counting the pages of %d processes after %.0f s of sampling" % (mechanism, len(pids), result["seconds"]))
        end_pages = duplicate_limit(pids)
        result["pages_at_end"] = end_pages
        # What KSM saved on the services' own pages (other mergeable processes on the machine do
        # not count): frames that went away since the start; the limit: duplicate frames at the start.
        own_saved = max(0, end_pages["shared_pages"] - start_pages["shared_pages"])
        result["own_saved_mib"] = round(own_saved * PAGE / MIB, 1)
        result["duplicate_limit_mib"] = round(start_pages["limit_pages"] * PAGE / MIB, 1)
        result["limit_fraction_pct"] = round(100.0 * own_saved / start_pages["limit_pages"], 1) if start_pages["limit_pages"] else 0
        # Time to 95 % of the limit, on the kernel's pages_sharing (machine-wide, from 0: the run
        # unmerged everything before KSM came on; the services are the mergeable processes it starts).
        result["t95_limit_seconds"] = None
        if start_pages["limit_pages"]:
            for sample in samples:
                if sample["pages_sharing"] >= 0.95 * start_pages["limit_pages"]:
                    result["t95_limit_seconds"] = sample["t"]
                    break
        result["saved_pct_rss"] = round(100.0 * result["own_saved_mib"] / result["rss_mib"], 1) if result["rss_mib"] else 0
        result["saved_pct_pss"] = round(100.0 * result["own_saved_mib"] / result["pss_mib"], 1) if result["pss_mib"] else 0
        result["health"] = health(names)
        result["healthy"] = all(all(v.values()) for v in result["health"].values())
        return result
    finally:
        kernel.unmerge()
        podman("rm", "-f", "-t", "0", *names, check=False)


def save(path, results):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(results, handle, indent=1)


def table(results):
    head = ("| opt-in | optin chosen | N | profile | services' RSS / PSS MiB | saved MiB (services' frames) | kernel pages_sharing MiB "
            "| general_profit MiB | saved % of RSS | % of PSS | steady after s | ksmd CPU % (whole run / steady) "
            "| dup. limit MiB | % of limit | 95 % of limit after s | opted in (mariadb, apache2, memcached) | healthy |")
    lines = [head, "|" + "---|" * 17]
    for r in results:
        if "error" in r:
            lines.append("| %s | - | %s | %s | %s |" % (r["mechanism"], r["n"], r["profile"], r["error"][:200]))
            continue
        lines.append("| %s | %s | %d | %s | %s / %s | %s | %s | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | %s |" % (
            r["mechanism"], r.get("optin"), r["n"], r["profile"], r["rss_mib"], r["pss_mib"], r["own_saved_mib"], r["saved_mib"],
            r["general_profit_mib"], r["saved_pct_rss"], r["saved_pct_pss"],
            r["steady_seconds"] if r["steady_seconds"] is not None else "not within %ss" % r["seconds"],
            r["ksmd_cpu_pct"], "-" if r.get("ksmd_cpu_steady_pct") is None else r["ksmd_cpu_steady_pct"],
            r["duplicate_limit_mib"], r["limit_fraction_pct"],
            "-" if r.get("t95_limit_seconds") is None else r["t95_limit_seconds"],
            ", ".join(r["opted_in"][s] for s in SERVICES), "yes" if r["healthy"] else "NO %s" % r["health"]))
    lines.append("")
    lines.append("Goal: >= 95 % of the duplicate-page limit within 300 s at <= 5 % ksmd CPU once steady.")
    for r in results:
        if "error" in r or r["mechanism"] == "control":
            continue
        t95, cpu = r.get("t95_limit_seconds"), r.get("ksmd_cpu_steady_pct")
        met = t95 is not None and t95 <= 300 and cpu is not None and cpu <= 5
        lines.append("  %s@%s: 95 %% after %s s, ksmd %s %% steady: %s" % (
            r["mechanism"], r["profile"], "-" if t95 is None else t95, "-" if cpu is None else cpu,
            "met" if met else "NOT met"))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--mechanisms", default="control,preload,preload-low,prctl,memoryksm,prctl@aggressive",
                        help="comma-separated MECHANISM[@PROFILE] (PROFILE: a node role profile, default --profile)")
    parser.add_argument("--profile", default="balanced")
    parser.add_argument("--seconds", type=float, default=300, help="longest sampling per mechanism")
    parser.add_argument("--control-seconds", type=float, default=60)
    parser.add_argument("--extra", type=float, default=0, help="sampling after the steady state")
    parser.add_argument("--interval", type=float, default=5)
    parser.add_argument("--ci", action="store_true")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.ci:
        args.n, args.mechanisms, args.seconds, args.control_seconds = 4, "control,auto", 150, 30
        if args.out == DEFAULT_OUT:
            args.out = os.path.join(ROOT, "build/results/real_stack_ci.json")
    if os.geteuid() != 0:
        sys.exit("real_stack: needs root (podman, /proc/PID/pagemap, the kernel's KSM knobs)")
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        sys.exit("real_stack: %s missing (tests/images/build.sh stack)" % IMAGE)
    workdir = tempfile.mkdtemp(prefix="samepage-real-stack-")
    results = []
    t_all = time.time()
    try:
        with Kernel(os.path.join(workdir, "knobs.json")) as kernel:
            for spec in args.mechanisms.split(","):
                mechanism, dummy, profile = spec.partition("@")
                profile = profile or args.profile
                t0 = time.time()
                try:
                    results.append(one_run(args, mechanism, profile, kernel, workdir))
                except RuntimeError as exc:
                    log("%s failed: %s" % (mechanism, exc))
                    results.append({"mechanism": mechanism, "n": args.n, "profile": profile, "error": str(exc)})
                log("%s took %.0f s" % (mechanism, time.time() - t0))
                save(args.out, results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    save(args.out, results)
    print(table(results))
    print("total %.0f s; details: %s" % (time.time() - t_all, args.out))
    if args.ci:
        return ci_check(results)
    return 0


def ci_check(results):
    by = {r["mechanism"]: r for r in results}
    problems = []
    control, chosen = by.get("control", {}), by.get("auto", {})
    for r in (control, chosen):
        if "error" in r:
            problems.append("%s: %s" % (r["mechanism"], r["error"][:500]))
    if not problems:
        if not chosen["healthy"] or not control["healthy"]:
            problems.append("unhealthy services: %s / %s" % (control["health"], chosen["health"]))
        if chosen["own_saved_mib"] <= max(control["own_saved_mib"], 0) * 2 or chosen["own_saved_mib"] < 8:
            problems.append("merging with %s (%s MiB of the services' pages) does not beat the control (%s MiB)"
                            % (chosen.get("optin"), chosen["own_saved_mib"], control["own_saved_mib"]))
        for svc in SERVICES:
            done, total = chosen["opted_in"][svc].split("/")
            if int(total) == 0 or done != total:
                problems.append("%s: %s processes opted in" % (svc, chosen["opted_in"][svc]))
        if chosen.get("optin") == "preload":
            done, total = chosen["maps_real_library"]["mariadb"].split("/")
            if done == "0":
                problems.append("MariaDB does not map the real %s" % REAL_LIBRARY)
    for p in problems:
        print("FAIL: %s" % p)
    if not problems:
        print("ok: %s picked by auto; %.1f MiB merged vs %.1f MiB in the control; every service healthy"
              % (chosen.get("optin"), chosen["own_saved_mib"], control["own_saved_mib"]))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
