"""samepage.ksm.ksm_estimate in-process: option validation before anything is read, a fake /proc tree read-only."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import sys
import pathlib

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "module_utils"))

from ansible_collections.samepage.ksm.plugins.modules import ksm_estimate  # noqa: E402
from test_estimate import PAGE, anon, plant  # noqa: E402


@pytest.fixture
def proc(tmp_path):
    path = tmp_path / "proc"
    path.mkdir()
    (path / "meminfo").write_text("MemTotal:       4096 kB\n")
    return path


@pytest.mark.parametrize("args,message", [
    ({"sample": 3}, "sample: invalid value 3; expected a power of two"),
    ({"sample": 0}, "sample: invalid value 0"),
    ({"max_entries": 4}, "max_entries: invalid value 4; expected a number of entries >= 16"),
    ({"time_budget": 0}, "time_budget: invalid value 0"),
    ({"min_size_mib": -1}, "min_size_mib: invalid value -1"),
    ({"cgroups": ["system.slice"]}, "cgroups: expected absolute cgroup paths"),
    ({"command": "(unclosed"}, "command: invalid regular expression '(unclosed'"),
    ({"pids": [0]}, "pids: invalid value(s) 0"),
    ({"units": [""]}, "units: an empty name"),
    ({"max_page_sharing": 1}, "max_page_sharing: invalid value 1"),
])
def test_bad_options_fail_with_the_option_named(run_module, proc, args, message):
    failed, result = run_module(ksm_estimate, dict(args, proc_path=str(proc)))
    assert failed and message in result["msg"], result["msg"]


def test_all_errors_at_once(run_module, proc):
    failed, result = run_module(ksm_estimate, {"proc_path": str(proc), "sample": 5, "top_groups": -1})
    assert failed and "sample:" in result["msg"] and "top_groups:" in result["msg"]


def test_estimates_a_fake_proc_tree_and_writes_nothing(run_module, proc, tmp_path, digest):
    sysfs = tmp_path / "ksm"
    sysfs.mkdir()
    (sysfs / "use_zero_pages").write_text("1\n")
    (sysfs / "max_page_sharing").write_text("256\n")
    plant(proc, 100, anon("X", "Y", None), cgroup="0::/system.slice/mariadb.service\n", comm="mysqld")
    plant(proc, 200, anon("X", "Y", "Z"), cgroup="0::/system.slice/mariadb.service\n", comm="mysqld")
    plant(proc, 300, anon("X", "Q"), cgroup="0::/system.slice/other.service\n", comm="other")
    before = digest(tmp_path)
    args = {"proc_path": str(proc), "sysfs_path": str(sysfs), "units": ["mariadb"], "min_size_mib": 0}
    for check in (False, True):
        failed, result = run_module(ksm_estimate, args, check_mode=check)
        assert not failed and result["changed"] is False
        est = result["estimate"]
        assert est["candidates"] == 2 and est["use_zero_pages"] is True
        assert est["saving_pages"] == 1 + 1 + 1          # X, Y, the zero page
        assert est["saving_bytes"] == 3 * PAGE
        assert est["groups"][0]["id"] == "mariadb.service" and est["groups"][0]["processes"] == 2
        assert est["saving_percent_of_ram"] == round(100.0 * 3 * PAGE / (4096 * 1024), 2)
    failed, result = run_module(ksm_estimate, dict(args, use_zero_pages=False, units=[], group_by="process"))
    est = result["estimate"]
    assert est["candidates"] == 3 and est["saving_pages"] == 2 + 1   # X three times, Y twice; one zero page
    assert sorted(g["id"] for g in est["groups"]) == ["100", "200", "300"]
    assert digest(tmp_path) == before


def test_no_match_warns(run_module, proc, warned):
    failed, result = run_module(ksm_estimate, {"proc_path": str(proc), "command": "nothing-like-this"})
    assert not failed and result["estimate"]["candidates"] == 0
    assert any("no process matched" in w for w in warned)
