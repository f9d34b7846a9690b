"""The fleet report filter, fed with ksm_info results."""
import copy
import json
import re

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.samepage.ksm.plugins.filter.ksm_fleet_report import ksm_fleet_report
from ansible_collections.samepage.ksm.plugins.module_utils import _ksm_info

MIB = 1048576


def ksm_result(saved_pages, shared, profit=None, host="hn", run=1, top=(), cpu=1.5, full_scans=3,
               unshared=0, zero=0):
    counters = {"pages_shared": shared, "pages_sharing": saved_pages, "pages_unshared": unshared,
                "pages_volatile": 0, "full_scans": full_scans, "ksm_zero_pages": zero, "pages_scanned": 1000}
    if profit is not None:
        counters["general_profit"] = profit
    saved = (saved_pages + zero) * 4096
    return {"changed": False, "ksm": {
        "available": True, "reason": None, "knobs": {"run": run, "pages_to_scan": 5000, "sleep_millisecs": 20},
        "counters": counters, "page_size": 4096, "saved_bytes": saved, "saved_mib": round(saved / MIB, 2),
        "general_profit_bytes": profit, "general_profit_mib": None if profit is None else round(profit / MIB, 2),
        "sharing_ratio": round(saved_pages / shared, 4) if shared else None,
        "unshared_ratio": round(unshared / saved_pages, 4) if saved_pages else None,
        "kernel": {"config_ksm": "y", "config_source": "/proc/config.gz", "release": "6.18"},
        "ksmd": {"running": True, "pid": 37, "cpu_seconds": cpu}, "top_processes": list(top), "host": host}}


NO_KSM = {"changed": False, "ksm": {
    "available": False, "reason": "/sys/kernel/mm/ksm does not exist: the kernel lacks KSM", "knobs": {},
    "counters": {}, "page_size": 4096, "saved_bytes": None, "saved_mib": None, "general_profit_bytes": None,
    "general_profit_mib": None, "sharing_ratio": None, "unshared_ratio": None,
    "kernel": {"config_ksm": "n", "config_source": "/boot/config-3.10", "release": "3.10"},
    "ksmd": {"running": False, "pid": None, "cpu_seconds": None}, "top_processes": [], "host": "ct1"}}
UNREACHABLE = {"unreachable": True, "changed": False,
               "msg": "Failed to connect to the host via ssh: Connection refused\nmore detail"}
FAILED = {"failed": False, "msg": "MODULE FAILURE: /usr/bin/python: not found", "rc": 127}

PROCS = [{"pid": 10 + i, "comm": "worker|%d" % i, "merging_pages": 8192 - i, "profit_bytes": (32 - i) * MIB,
          "merge_any": True, "mergeable": True} for i in range(5)]


@pytest.fixture
def fleet():
    return {
        "node-b": ksm_result(25600, 2, profit=100 * MIB, host="b", top=PROCS, unshared=2560),
        "node-a": ksm_result(2560, 0 + 1, profit=9 * MIB, host="a", run=0),
        "ct-1": copy.deepcopy(NO_KSM),
        "ghost": dict(UNREACHABLE),
        "broken": dict(FAILED),
        "limited": None,
    }


def table_rows(markdown):
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    return header, {re.split(r"(?<!\\)\|", row)[1].strip(): [c.strip() for c in re.split(r"(?<!\\)\|", row)[2:-1]]
                    for row in body}


def test_playbooks_find_the_filter_by_its_fqcn(tmp_path):
    """What report.yml does: a template names the filter by its FQCN and Ansible resolves it."""
    import os as _os
    import pathlib as _pathlib
    import subprocess as _subprocess
    root = _pathlib.Path(__file__).resolve().parents[4]
    play = tmp_path / "play.yml"
    play.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n"
                    "        msg: \"{{ {'hn1': {'ksm': {'available': False, 'reason': 'none here'}}}"
                    " | samepage.ksm.ksm_fleet_report('2026-11-26T12:00:00Z') }}\"\n")
    env = dict(_os.environ, ANSIBLE_CONFIG=str(root / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(root / "build" / "collections"))
    done = _subprocess.run([str(root / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play)],
                           cwd=str(tmp_path), env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "none here" in done.stdout


def test_totals_count_only_hosts_that_reported(fleet):
    report = ksm_fleet_report(fleet, "2026-11-26T12:00:00Z")
    totals = report["totals"]
    assert totals == {
        "hosts": 6, "reporting": 2, "unreachable": 1, "no_ksm": 1, "failed": 2,
        "saved_bytes": (25600 + 2560) * 4096, "saved_mib": 110.0,
        "general_profit_bytes": 109 * MIB, "general_profit_mib": 109.0,
        "pages_shared": 3, "pages_sharing": 28160, "sharing_ratio": round(28160 / 3, 4),
    }


def test_statuses_and_reasons(fleet):
    hosts = {h["host"]: h for h in ksm_fleet_report(fleet)["hosts"]}
    assert list(hosts) == sorted(fleet)
    assert hosts["node-b"]["status"] == "ok" and hosts["node-b"]["reason"] is None
    assert hosts["ct-1"]["status"] == "no_ksm" and "does not exist" in hosts["ct-1"]["reason"]
    assert hosts["ct-1"]["config_ksm"] == "n"
    assert hosts["ghost"]["status"] == "unreachable"
    assert hosts["ghost"]["reason"] == "Failed to connect to the host via ssh: Connection refused"
    assert hosts["broken"]["status"] == "failed" and "python: not found" in hosts["broken"]["reason"]
    assert hosts["limited"]["status"] == "failed" and hosts["limited"]["reason"] == "no ksm_info result for this host"
    for name in ("ct-1", "ghost", "broken", "limited"):
        assert hosts[name]["saved_bytes"] is None, name  # never a zero for a host that did not report


def test_markdown_table(fleet):
    markdown = ksm_fleet_report(fleet, "2026-11-26T12:00:00Z", top=2)["markdown"]
    assert markdown.startswith("# KSM fleet report\n\nGenerated 2026-11-26T12:00:00Z from 6 hosts.\n")
    header, rows = table_rows(markdown)
    assert header.split("|")[1:-1] == [
        " Host ", " Status ", " Saved MiB ", " General profit MiB ", " sharing/shared ", " unshared/sharing ",
        " Full scans ", " ksmd CPU s ", " Top processes (profit) "]
    assert rows["node-b"][:7] == ["ok", "100.00", "100.00", "12800.00", "0.10", "3", "1.50"]
    # comm names with a pipe are escaped; two processes shown, the rest counted
    assert rows["node-b"][7] == "worker\\|0[10] 32.00 MiB, worker\\|1[11] 31.00 MiB, +3 more"
    assert rows["node-a"][0] == "ok (run=0)" and rows["node-a"][1] == "10.00"
    assert rows["node-a"][7] == "-"
    assert rows["ghost"] == ["unreachable: Failed to connect to the host via ssh: Connection refused"] + ["n/a"] * 7
    assert rows["ct-1"][0].startswith("no KSM: /sys/kernel/mm/ksm does not exist") and rows["ct-1"][1:] == ["n/a"] * 7
    assert rows["broken"][0].startswith("failed: MODULE FAILURE")
    assert ("**Fleet total:** 110.00 MiB saved, general profit 109.00 MiB, on 2 of 6 hosts "
            "(1 unreachable, 1 without KSM, 2 failed).") in markdown


def test_json_holds_the_same_data(fleet):
    report = ksm_fleet_report(fleet, "2026-11-26T12:00:00Z")
    document = json.loads(report["json"])
    assert document["generated"] == "2026-11-26T12:00:00Z"
    assert document["totals"] == report["totals"]
    assert document["hosts"] == report["hosts"]
    node_b = next(h for h in document["hosts"] if h["host"] == "node-b")
    assert len(node_b["top_processes"]) == 5  # the JSON keeps every process the module returned
    assert node_b["counters"]["pages_sharing"] == 25600


def test_old_kernels_without_general_profit():
    old = {"old-1": ksm_result(256, 1), "old-2": ksm_result(512, 2, top=[
        {"pid": 5, "comm": "java", "merging_pages": 256, "profit_bytes": None, "merge_any": None,
         "mergeable": None}])}
    report = ksm_fleet_report(old)
    assert report["totals"]["general_profit_bytes"] is None and report["totals"]["general_profit_mib"] is None
    rows = table_rows(report["markdown"])[1]
    assert rows["old-1"][2] == "n/a"
    assert rows["old-2"][7] == "java[5] 1.00 MiB"  # merging pages x page size when the kernel has no profit
    assert "general profit n/a MiB" in report["markdown"]
    assert "Generated" not in report["markdown"]


def test_empty_fleet():
    report = ksm_fleet_report({})
    assert report["totals"]["hosts"] == 0 and report["totals"]["saved_bytes"] == 0
    assert report["totals"]["sharing_ratio"] is None
    assert json.loads(report["json"])["hosts"] == []


@pytest.mark.parametrize("bad, kwargs, message", [
    ([{"host": "a"}], {}, "expected a mapping of host name"),
    ("text", {}, "expected a mapping of host name"),
    ({}, {"top": -1}, "top must be a whole number"),
    ({}, {"top": "3"}, "top must be a whole number"),
])
def test_bad_input(bad, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        ksm_fleet_report(bad, **kwargs)


def test_module_output_feeds_the_report(fake_sysfs, tmp_path):
    """The real gathering code on a fake tree, straight into the report: the shapes agree."""
    for name, value in {"pages_shared": 3, "pages_sharing": 3000, "general_profit": 12000000}.items():
        (fake_sysfs / name).write_text("%d\n" % value)
    info, warnings = _ksm_info.gather(str(fake_sysfs), str(tmp_path / "proc"), top=3,
                                      config_paths=[str(tmp_path / "none")], size=4096, ticks=100)
    assert warnings == []
    report = ksm_fleet_report({"hn1": {"changed": False, "ksm": info}, "hn2": {"changed": False, "ksm": info}})
    assert report["totals"]["saved_bytes"] == 2 * 3000 * 4096
    assert report["totals"]["reporting"] == 2


def test_top_groups_table(fleet):
    groups = [{"kind": "container", "id": "a" * 64, "name": "web|1", "runtime": "podman", "processes": 3,
               "merging_pages": 2560, "profit_bytes": 9 * MIB},
              {"kind": "unit", "id": "mariadb.service", "name": None, "runtime": "systemd", "processes": 1,
               "merging_pages": 256, "profit_bytes": None},
              {"kind": "host", "id": "/", "name": None, "runtime": None, "processes": 1, "merging_pages": 1,
               "profit_bytes": 4096}]
    fleet["node-b"]["ksm"]["top_groups"] = groups
    report = ksm_fleet_report(fleet, top=2)
    markdown = report["markdown"]
    table = markdown.split("## Top groups (containers, units, slices)\n\n", 1)[1]
    assert table.splitlines()[:5] == [
        "| Host | Kind | Group | Runtime | Processes | Merged MiB | Profit MiB |",
        "|---|---|---|---|--:|--:|--:|",
        "| node-b | container | web\\|1 | podman | 3 | 10.00 | 9.00 |",
        "| node-b | unit | mariadb.service | systemd | 1 | 1.00 | n/a |",
        "| node-b | +1 more | | | | | |",
    ]
    assert markdown.index("**Fleet total:**") < markdown.index("## Top groups")
    assert next(h for h in report["hosts"] if h["host"] == "node-b")["top_groups"] == groups
    assert {h["host"]: h["top_groups"] for h in json.loads(report["json"])["hosts"]}["ghost"] == []
    del fleet["node-b"]["ksm"]["top_groups"]
    assert "## Top groups" not in ksm_fleet_report(fleet)["markdown"]


def test_a_failed_result_that_carries_ksm_data_counts_as_failed():
    failed = {"failed": True, "msg": "the kernel does not hold the wanted KSM values after writing them: run=0 (wanted 1)",
              "ksm": {"available": True, "knobs": {"run": 0}, "counters": {"pages_sharing": 5}, "saved_bytes": 20480,
                      "saved_mib": 0.02, "kernel": {}, "ksmd": {}}}
    report = ksm_fleet_report({"hn1": failed}, "2026-12-01T00:00:00Z")
    entry = report["hosts"][0]
    assert entry["status"] == "failed" and entry["reason"].startswith("the kernel does not hold")
    assert report["totals"]["failed"] == 1 and report["totals"]["reporting"] == 0
    assert report["totals"]["saved_bytes"] == 0
