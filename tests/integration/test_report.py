"""playbooks/report.yml for real: the real kernel merging a workload, a fake KSM host, a host
without KSM and an unreachable host, in one inventory."""
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))

from ksm_workload import Workload  # noqa: E402

MIB = 1048576
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
FAKE_COUNTERS = {"pages_shared": 4, "pages_sharing": 2556, "pages_unshared": 1278, "pages_volatile": 3,
                 "ksm_zero_pages": 4, "general_profit": 10000000, "full_scans": 12, "pages_scanned": 90000}
FAKE_KNOBS = {"run": "1", "pages_to_scan": "1000", "sleep_millisecs": "50", "merge_across_nodes": "1",
              "max_page_sharing": "256", "advisor_mode": "[none] scan-time"}


def stat_line(pid, comm, flags, utime, stime):
    return "%d (%s) S 2 0 0 0 -1 %d 0 0 0 0 %d %d %s\n" % (pid, comm, flags, utime, stime, " ".join(["0"] * 37))


def make_fake_host(base):
    """A KSM sysfs and /proc of a hardware node with known figures."""
    sysfs = base / "ksm"
    sysfs.mkdir(parents=True)
    for name, value in dict(FAKE_KNOBS, **FAKE_COUNTERS).items():
        (sysfs / name).write_text("%s\n" % value)
    proc = base / "proc"
    ksmd = proc / "37"
    ksmd.mkdir(parents=True)
    (ksmd / "comm").write_text("ksmd\n")
    (ksmd / "stat").write_text(stat_line(37, "ksmd", 0x00200040, 3 * TICKS, TICKS))
    mysqld = proc / "4242"
    mysqld.mkdir()
    (mysqld / "comm").write_text("mysqld\n")
    (mysqld / "stat").write_text(stat_line(4242, "mysqld", 0x400100, 0, 0))
    (mysqld / "ksm_stat").write_text("ksm_rmap_items 2600\nksm_zero_pages 4\nksm_merging_pages 2556\n"
                                     "ksm_process_profit 9000000\nksm_merge_any: yes\nksm_mergeable: yes\n")
    return sysfs, proc


def write_inventory(tmp, hosts):
    lines = ["[ksm_nodes]"]
    for name, variables in hosts.items():
        lines.append(" ".join([name] + ["%s=%s" % kv for kv in variables.items()]))
    path = tmp / "inventory.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def local(**extra):
    return dict({"ansible_connection": "local", "ansible_python_interpreter": sys.executable}, **extra)


def run_report(inventory, *args, cwd=ROOT):
    # PWD as a shell sets it when the user runs ansible-playbook from that directory
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", PWD=str(cwd))
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / "report.yml"),
         *args], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc.stdout


def digest(*paths):
    h = hashlib.sha256()
    for path in paths:
        st = os.stat(path)
        h.update(("%s %d %d\n" % (path, st.st_ino, st.st_mtime_ns)).encode())
        h.update(pathlib.Path(path).read_bytes())
    return h.hexdigest()


def prom(path):
    return {line.split()[0]: float(line.split()[1])
            for line in pathlib.Path(path).read_text().splitlines() if not line.startswith("#")}


def row(markdown, host):
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.split(" | ")]
        if cells[0] == "| " + host:
            return cells[1:]
    raise AssertionError("no row for %s in:\n%s" % (host, markdown))


@pytest.fixture
def fleet(tmp_path):
    fake_sysfs, fake_proc = make_fake_host(tmp_path / "fakehn")
    (tmp_path / "empty-proc").mkdir()
    hosts = {
        "localhost": local(ksm_report_textfile_dir=tmp_path / "prom-localhost"),
        "fakehn": local(ksm_report_sysfs_path=fake_sysfs, ksm_report_proc_path=fake_proc,
                        ksm_report_textfile_dir=tmp_path / "prom-fakehn"),
        "noksm": local(ksm_report_sysfs_path=tmp_path / "no-such-ksm", ksm_report_proc_path=tmp_path / "empty-proc",
                       ksm_report_textfile_dir=tmp_path / "prom-noksm"),
        "ghost": {"ansible_host": "127.0.0.254", "ansible_port": 1},
    }
    return tmp_path, write_inventory(tmp_path, hosts)


def test_fleet_report_with_real_merging(real_ksm, fleet):
    tmp, inventory = fleet
    report_dir = tmp / "report"
    with Workload(mib=32, procs=2, opt_in="madvise") as work:
        (real_ksm / "advisor_mode").write_text("none")
        (real_ksm / "pages_to_scan").write_text("5000")
        (real_ksm / "sleep_millisecs").write_text("20")
        (real_ksm / "run").write_text("1")
        deadline = time.monotonic() + 30
        while int((real_ksm / "pages_sharing").read_text()) * PAGE < 30 * MIB and time.monotonic() < deadline:
            time.sleep(0.2)
        started = time.monotonic()
        stdout = run_report(inventory, "-e", "ksm_report_dir=%s" % report_dir, "-e", "ksm_report_top_processes=10")
        elapsed = time.monotonic() - started

        data = json.loads((report_dir / "ksm-report.json").read_text())
        markdown = (report_dir / "ksm-report.md").read_text()
        hosts = {h["host"]: h for h in data["hosts"]}
        assert sorted(hosts) == ["fakehn", "ghost", "localhost", "noksm"]

        # the real kernel, merging the workload
        real = hosts["localhost"]
        assert real["status"] == "ok" and real["run"] == 1
        assert real["saved_mib"] >= 25
        workload = [p for p in real["top_processes"] if p["pid"] in work.pids]
        assert sorted(p["pid"] for p in workload) == sorted(work.pids)
        assert all(p["merging_pages"] > 0 for p in workload)
        assert real["ksmd_running"] is True and real["ksmd_cpu_seconds"] > 0

        # the fake node: every figure known in advance
        fake = hosts["fakehn"]
        assert fake["status"] == "ok"
        assert fake["saved_bytes"] == (2556 + 4) * PAGE
        assert fake["general_profit_bytes"] == 10000000 and fake["general_profit_mib"] == 9.54
        assert fake["sharing_ratio"] == 639.0 and fake["unshared_ratio"] == 0.5
        assert fake["full_scans"] == 12 and fake["ksmd_cpu_seconds"] == 4.0
        assert fake["top_processes"] == [{"pid": 4242, "comm": "mysqld", "merging_pages": 2556,
                                          "profit_bytes": 9000000, "merge_any": True, "mergeable": True}]

        # the host without KSM and the unreachable host: named as such, never zeros
        assert hosts["noksm"]["status"] == "no_ksm" and "does not exist" in hosts["noksm"]["reason"]
        assert hosts["ghost"]["status"] == "unreachable" and "127.0.0.254" in hosts["ghost"]["reason"]
        for name in ("noksm", "ghost"):
            assert hosts[name]["saved_bytes"] is None and hosts[name]["saved_mib"] is None

        totals = data["totals"]
        assert totals["hosts"] == 4 and totals["reporting"] == 2
        assert (totals["unreachable"], totals["no_ksm"], totals["failed"]) == (1, 1, 0)
        assert totals["saved_bytes"] == real["saved_bytes"] + fake["saved_bytes"]
        assert totals["general_profit_bytes"] == real["general_profit_bytes"] + 10000000

        # the Markdown says the same
        assert re.search(r"^Generated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ from 4 hosts\.$", markdown, re.M)
        assert row(markdown, "fakehn")[:7] == ["ok", "%.2f" % fake["saved_mib"], "9.54", "639.00", "0.50", "12", "4.00"]
        assert row(markdown, "fakehn")[7] == "mysqld[4242] 8.58 MiB |"
        assert row(markdown, "localhost")[1] == "%.2f" % real["saved_mib"]
        assert row(markdown, "ghost")[0].startswith("unreachable: ") and row(markdown, "ghost")[1] == "n/a"
        assert row(markdown, "noksm")[0].startswith("no KSM: ") and row(markdown, "noksm")[1] == "n/a"
        assert ("**Fleet total:** %.2f MiB saved, general profit %.2f MiB, on 2 of 4 hosts "
                "(1 unreachable, 1 without KSM, 0 failed)." % (totals["saved_mib"], totals["general_profit_mib"])
                ) in markdown
        assert "Fleet total" in stdout  # the play shows the report too

        # node_exporter textfiles, from the same readings as the report
        assert prom(tmp / "prom-localhost" / "ksm.prom")["samepage_ksm_saved_bytes"] == real["saved_bytes"]
        fake_prom = prom(tmp / "prom-fakehn" / "ksm.prom")
        assert fake_prom["samepage_ksm_saved_bytes"] == fake["saved_bytes"]
        assert fake_prom["samepage_ksm_pages_scanned_total"] == 90000 and fake_prom["samepage_ksm_available"] == 1
        assert prom(tmp / "prom-noksm" / "ksm.prom") == {"samepage_ksm_available": 0.0,
                                                         "samepage_ksm_ksmd_running": 0.0}
        print("report.yml over 4 hosts took %.1f s" % elapsed)

        # check mode writes nothing; a normal re-run leaves unchanged textfiles alone
        fixed = [report_dir / "ksm-report.md", report_dir / "ksm-report.json", tmp / "prom-localhost" / "ksm.prom",
                 tmp / "prom-fakehn" / "ksm.prom", tmp / "prom-noksm" / "ksm.prom"]
        before = digest(*fixed)
        run_report(inventory, "--check", "-e", "ksm_report_dir=%s" % report_dir)
        assert digest(*fixed) == before
        stable = fixed[3:]
        before = digest(*stable)
        run_report(inventory, "-e", "ksm_report_dir=%s" % report_dir)
        assert digest(*stable) == before


def test_relative_report_dir_is_under_the_current_directory(tmp_path):
    """Run as samepage.ksm.report from an installed collection, the report must land where the user is,
    not inside the collection. Only fake and missing hosts: no kernel lock needed."""
    fake_sysfs, fake_proc = make_fake_host(tmp_path / "fakehn")
    inventory = write_inventory(tmp_path, {
        "fakehn": local(ksm_report_sysfs_path=fake_sysfs, ksm_report_proc_path=fake_proc),
        "ghost": {"ansible_host": "127.0.0.254", "ansible_port": 1},
    })
    here = tmp_path / "operator"
    here.mkdir()
    run_report(inventory, "-e", "ksm_report_dir=reports/today", "-e", "ksm_report_top_processes=0", cwd=here)
    target = here / "reports" / "today"
    data = json.loads((target / "ksm-report.json").read_text())
    assert data["totals"]["reporting"] == 1 and data["totals"]["unreachable"] == 1
    assert data["totals"]["saved_bytes"] == (2556 + 4) * PAGE
    assert [h["top_processes"] for h in data["hosts"]] == [[], []]
    assert "| fakehn | ok |" in (target / "ksm-report.md").read_text()
    assert not (ROOT / "playbooks" / "reports").exists()
    assert not (tmp_path / "prom-fakehn").exists()  # no textfile unless asked for
    # the default is ksm-report in the current directory
    run_report(inventory, "-e", "ksm_report_top_processes=0", cwd=here)
    assert (here / "ksm-report" / "ksm-report.json").exists()
