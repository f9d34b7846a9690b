"""samepage.ksm.ksm_info through ansible-playbook on the real kernel, with pages really merged."""
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))

from ksm_knobs import read as read_knob  # noqa: E402
from ksm_workload import Workload  # noqa: E402

INFO_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: info
      samepage.ksm.ksm_info:
        top_processes: 10
"""

KNOBS = ("run", "pages_to_scan", "sleep_millisecs", "merge_across_nodes", "max_page_sharing",
         "use_zero_pages", "advisor_mode")


def write(sysfs, name, value):
    (sysfs / name).write_text(str(value))


def knob_state():
    return {name: read_knob(name) for name in KNOBS}


def ksmd_pid():
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if pathlib.Path("/proc", entry, "comm").read_text().strip() == "ksmd":
                    return int(entry)
            except OSError:
                continue
    raise AssertionError("no ksmd thread on this kernel")


def test_reports_the_real_kernel_and_changes_nothing(real_ksm, playbook):
    before = knob_state()
    for check in ([], ["--check"]):
        results = playbook(INFO_PLAY, *check)[1]
        info = results["info"]
        assert info["changed"] is False
        ksm = info["ksm"]
        assert ksm["available"] is True
        assert ksm["kernel"]["config_ksm"] == "y"
        assert ksm["kernel"]["config_source"] in ("/proc/config.gz", "/boot/config-" + os.uname().release)
        assert ksm["ksmd"]["running"] is True and ksm["ksmd"]["pid"] == ksmd_pid()
        assert ksm["page_size"] == os.sysconf("SC_PAGE_SIZE")
        for name, value in before.items():
            assert ksm["knobs"][name] == value, name
        for counter in ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "full_scans",
                        "general_profit", "ksm_zero_pages"):
            assert isinstance(ksm["counters"][counter], int), counter
        assert knob_state() == before


def test_shows_memory_saved_by_a_merging_workload(real_ksm, playbook):
    cpu_before = None
    with Workload(mib=32, procs=2, opt_in="madvise") as work:
        write(real_ksm, "advisor_mode", "none")
        write(real_ksm, "pages_to_scan", 5000)
        write(real_ksm, "sleep_millisecs", 20)
        write(real_ksm, "run", 1)
        deadline = time.monotonic() + 30
        while True:
            results = playbook(INFO_PLAY)[1]
            ksm = results["info"]["ksm"]
            if cpu_before is None:
                cpu_before = ksm["ksmd"]["cpu_seconds"]
            merged = {p["pid"]: p for p in ksm["top_processes"] if p["pid"] in work.pids}
            if (ksm["saved_mib"] or 0) >= 25 and len(merged) == 2 or time.monotonic() > deadline:
                break
            time.sleep(1)

        assert results["info"]["changed"] is False
        assert ksm["saved_mib"] >= 25, ksm["counters"]
        assert ksm["saved_bytes"] == (ksm["counters"]["pages_sharing"] + ksm["counters"]["ksm_zero_pages"]) * ksm["page_size"]
        assert ksm["general_profit_mib"] > 20
        assert ksm["sharing_ratio"] is not None and ksm["sharing_ratio"] > 1
        assert ksm["knobs"]["run"] == 1 and ksm["knobs"]["pages_to_scan"] == 5000
        assert sorted(merged) == sorted(work.pids), ksm["top_processes"]
        for proc in merged.values():
            assert proc["merging_pages"] > 0
            assert proc["mergeable"] is True and proc["merge_any"] is False  # madvise, not prctl
            assert proc["profit_bytes"] > 0
            assert proc["comm"].startswith("python")
        assert ksm["ksmd"]["running"] is True and ksm["ksmd"]["pid"] == ksmd_pid()
        assert ksm["ksmd"]["cpu_seconds"] > 0
        assert ksm["ksmd"]["cpu_seconds"] >= cpu_before


def test_node_checks_report_a_foreign_rc_local_line_without_failing(real_ksm, playbook, tmp_path):
    rc_local = tmp_path / "rc.local"
    rc_local.write_text("#!/bin/sh\necho 1 > /sys/kernel/mm/ksm/run\nexit 0\n")
    text = ("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - name: info\n      samepage.ksm.ksm_info:\n"
            "        node_checks: true\n        rc_local_path: %s\n" % rc_local)
    rc, results, dummy = playbook(text)
    node = results["info"]["ksm"]["node"]
    assert node["sysfs_writable"] is True
    assert [c["kind"] for c in node["competing"]] == ["rc_local"] and "(line 2)" in node["competing"][0]["detail"]
