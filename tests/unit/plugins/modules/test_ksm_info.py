"""samepage.ksm.ksm_info against fake sysfs and fake /proc trees."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import gzip
import os

import pytest

from ansible_collections.samepage.ksm.plugins.module_utils import _ksm_info
from ansible_collections.samepage.ksm.plugins.modules import ksm_info

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
KTHREAD_FLAGS = 0x00200040  # PF_KTHREAD | PF_FORKNOEXEC, as ksmd has on 6.18


def stat_line(pid, comm, flags, utime, stime, state="S", ppid=2):
    # Fields 1..52 of /proc/PID/stat; only state, ppid, flags, utime, stime matter here.
    rest = [state, str(ppid), "0", "0", "0", "-1", str(flags), "0", "0", "0", "0", str(utime), str(stime)]
    rest += ["0"] * 39
    return "%d (%s) %s\n" % (pid, comm, " ".join(rest))


def ksm_stat_text(merging, profit, rmap=None, zero=0, merge_any=False, mergeable=True):
    return ("ksm_rmap_items %d\nksm_zero_pages %d\nksm_merging_pages %d\nksm_process_profit %d\n"
            "ksm_merge_any: %s\nksm_mergeable: %s\n" % (
                merging if rmap is None else rmap, zero, merging, profit,
                "yes" if merge_any else "no", "yes" if mergeable else "no"))


class FakeProc:
    """A directory laid out like /proc: PID dirs with comm, stat and KSM files."""

    def __init__(self, root):
        self.root = root
        root.mkdir(exist_ok=True)
        (root / "meminfo").write_text("MemTotal: 1 kB\n")  # non-PID entries must be ignored

    def add(self, pid, comm, flags=0x400100, utime=0, stime=0, ksm_stat=None, merging_pages=None,
            state="S"):
        base = self.root / str(pid)
        base.mkdir()
        (base / "comm").write_text(comm + "\n")
        (base / "stat").write_text(stat_line(pid, comm, flags, utime, stime, state))
        if ksm_stat is not None:
            (base / "ksm_stat").write_text(ksm_stat)
        if merging_pages is not None:
            (base / "ksm_merging_pages").write_text("%d\n" % merging_pages)
        return base


@pytest.fixture
def proc(tmp_path):
    fake = FakeProc(tmp_path / "proc")
    fake.add(1, "init")
    fake.add(37, "ksmd", flags=KTHREAD_FLAGS, utime=250, stime=50)
    return fake


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("CONFIG_MMU=y\nCONFIG_KSM=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\n")
    return path


def set_counters(sysfs, **values):
    for name, value in values.items():
        (sysfs / name).write_text("%s\n" % value)


def run_info(run_module, sysfs, proc, config, check_mode=False, **extra):
    args = {"sysfs_path": str(sysfs), "proc_path": str(proc.root), "kernel_config_paths": [str(config)]}
    args.update(extra)
    return run_module(ksm_info, args, check_mode=check_mode)


# --- sysfs: knobs, counters, savings, ratios ------------------------------------------------------

def test_reads_every_knob_and_counter_and_computes_savings(run_module, fake_sysfs, proc, config):
    set_counters(fake_sysfs, run=1, pages_shared=4, pages_sharing=1000, pages_unshared=250,
                 ksm_zero_pages=24, general_profit=4000000, full_scans=7)
    failed, result = run_info(run_module, fake_sysfs, proc, config)
    assert not failed and result["changed"] is False
    ksm = result["ksm"]
    assert ksm["available"] is True and ksm["reason"] is None
    assert set(ksm["knobs"]) == set(_ksm_info.KNOB_NAMES)
    assert ksm["knobs"]["advisor_mode"] == "none"
    assert ksm["knobs"]["run"] == 1
    assert {"pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "pages_scanned",
            "pages_skipped", "full_scans", "general_profit", "ksm_zero_pages", "stable_node_chains",
            "stable_node_dups"} == set(ksm["counters"])
    assert not set(ksm["knobs"]) & set(ksm["counters"])
    assert ksm["page_size"] == PAGE
    assert ksm["saved_bytes"] == (1000 + 24) * PAGE
    assert ksm["saved_mib"] == round((1000 + 24) * PAGE / 1048576, 2)
    assert ksm["general_profit_bytes"] == 4000000
    assert ksm["general_profit_mib"] == 3.81
    assert ksm["sharing_ratio"] == 250.0
    assert ksm["unshared_ratio"] == 0.25
    assert ksm["counters"]["full_scans"] == 7
    assert ksm["host"]


def test_zero_divisors_give_null_ratios(run_module, fake_sysfs, proc, config):
    set_counters(fake_sysfs, pages_shared=0, pages_sharing=0, pages_unshared=500)
    failed, result = run_info(run_module, fake_sysfs, proc, config)
    ksm = result["ksm"]
    assert not failed
    assert ksm["sharing_ratio"] is None
    assert ksm["unshared_ratio"] is None
    assert ksm["saved_bytes"] == 0 and ksm["saved_mib"] == 0.0


def test_old_kernel_without_general_profit_or_zero_pages(run_module, fake_sysfs, proc, config):
    for name in ("general_profit", "ksm_zero_pages", "advisor_mode", "advisor_max_cpu", "smart_scan",
                 "pages_skipped", "stable_node_chains", "stable_node_dups"):
        (fake_sysfs / name).unlink()
    set_counters(fake_sysfs, pages_shared=10, pages_sharing=90)
    failed, result = run_info(run_module, fake_sysfs, proc, config)
    ksm = result["ksm"]
    assert not failed and ksm["available"] is True
    assert ksm["saved_bytes"] == 90 * PAGE
    assert ksm["general_profit_bytes"] is None and ksm["general_profit_mib"] is None
    assert "advisor_mode" not in ksm["knobs"] and "general_profit" not in ksm["counters"]
    assert ksm["sharing_ratio"] == 9.0


def test_counter_a_newer_kernel_adds_is_kept(run_module, fake_sysfs, proc, config):
    set_counters(fake_sysfs, pages_future_counter=5)
    failed, result = run_info(run_module, fake_sysfs, proc, config)
    assert not failed and result["ksm"]["counters"]["pages_future_counter"] == 5


def test_missing_sysfs_is_reported_not_failed(run_module, tmp_path, proc, config):
    failed, result = run_info(run_module, tmp_path / "nothing", proc, config)
    ksm = result["ksm"]
    assert not failed and result["changed"] is False
    assert ksm["available"] is False
    assert str(tmp_path / "nothing") in ksm["reason"] and "does not exist" in ksm["reason"]
    assert ksm["knobs"] == {} and ksm["counters"] == {}
    assert ksm["saved_bytes"] is None and ksm["saved_mib"] is None and ksm["sharing_ratio"] is None
    # Kernel support and ksmd are still reported: they tell why KSM is missing.
    assert ksm["kernel"]["config_ksm"] == "y"
    assert ksm["ksmd"]["pid"] == 37


def test_missing_sysfs_on_kernel_built_without_ksm_says_so(run_module, tmp_path, proc):
    cfg = tmp_path / "config-plain"
    cfg.write_text("CONFIG_MMU=y\n# CONFIG_KSM is not set\n")
    failed, result = run_info(run_module, tmp_path / "nothing", proc, cfg)
    assert not failed
    assert result["ksm"]["kernel"] == {"config_ksm": "n", "config_source": str(cfg),
                                       "release": os.uname().release}
    assert "CONFIG_KSM=n" in result["ksm"]["reason"]


def test_empty_sysfs_dir_is_not_available(run_module, tmp_path, proc, config):
    empty = tmp_path / "ksm"
    empty.mkdir()
    failed, result = run_info(run_module, empty, proc, config)
    assert not failed and result["ksm"]["available"] is False
    assert "no readable KSM entries" in result["ksm"]["reason"]


# --- kernel configuration ---------------------------------------------------------------------

def test_boot_config_wins_over_proc_config(tmp_path, config):
    boot = tmp_path / "config-6.1.0"
    boot.write_text("# CONFIG_KSM is not set\n")
    assert _ksm_info.kernel_config([str(boot), str(config)]) == ("n", str(boot), [])


def test_missing_boot_config_falls_back_to_gzip(tmp_path, config):
    value, source, notes = _ksm_info.kernel_config([str(tmp_path / "config-none"), str(config)])
    assert (value, source, notes) == ("y", str(config), [])


def test_no_config_anywhere_is_null(run_module, fake_sysfs, proc, tmp_path):
    failed, result = run_info(run_module, fake_sysfs, proc, tmp_path / "absent")
    assert not failed and result["ksm"]["kernel"]["config_ksm"] is None
    assert result["ksm"]["kernel"]["config_source"] is None


def test_corrupt_gzip_warns_and_tries_the_next_file(run_module, fake_sysfs, proc, tmp_path, warned):
    broken = tmp_path / "config.gz"
    broken.write_bytes(b"\x1f\x8bthis is not gzip")
    plain = tmp_path / "config-plain"
    plain.write_text("CONFIG_KSM=y\n")
    failed, result = run_module(ksm_info, {
        "sysfs_path": str(fake_sysfs), "proc_path": str(proc.root),
        "kernel_config_paths": [str(broken), str(plain)]})
    assert not failed
    assert result["ksm"]["kernel"]["config_ksm"] == "y"
    assert result["ksm"]["kernel"]["config_source"] == str(plain)
    assert len(warned) == 1 and str(broken) in warned[0] and "not readable" in warned[0]


def test_default_config_paths_use_the_running_release():
    assert _ksm_info.default_kernel_config_paths("6.1.0-18-amd64") == [
        "/boot/config-6.1.0-18-amd64", "/proc/config.gz"]
    assert _ksm_info.default_kernel_config_paths()[0] == "/boot/config-" + os.uname().release


# --- ksmd -------------------------------------------------------------------------------------

def test_ksmd_found_with_cpu_seconds(run_module, fake_sysfs, proc, config):
    failed, result = run_info(run_module, fake_sysfs, proc, config)
    assert not failed
    assert result["ksm"]["ksmd"] == {"running": True, "pid": 37, "cpu_seconds": round(300 / TICKS, 2)}


def test_user_process_called_ksmd_is_not_the_kernel_thread(tmp_path):
    fake = FakeProc(tmp_path / "proc")
    fake.add(500, "ksmd", flags=0x400100, utime=900, stime=900)  # no PF_KTHREAD
    assert _ksm_info.find_ksmd(str(fake.root), 100) == {"running": False, "pid": None, "cpu_seconds": None}
    fake.add(600, "ksmd", flags=KTHREAD_FLAGS, utime=10, stime=5)
    assert _ksm_info.find_ksmd(str(fake.root), 100) == {"running": True, "pid": 600, "cpu_seconds": 0.15}


def test_no_ksmd_and_missing_proc(tmp_path):
    fake = FakeProc(tmp_path / "proc")
    fake.add(1, "init")
    assert _ksm_info.find_ksmd(str(fake.root), 100)["running"] is False
    assert _ksm_info.find_ksmd(str(tmp_path / "noproc"), 100)["pid"] is None


def test_stat_parsing_survives_odd_command_names():
    parsed = _ksm_info.parse_stat(stat_line(9, "a) (b c", 0x200000, 3, 4))
    assert parsed["comm"] == "a) (b c"
    assert (parsed["state"], parsed["ppid"], parsed["utime"], parsed["stime"]) == ("S", 2, 3, 4)


# --- top processes ----------------------------------------------------------------------------

def test_top_processes_by_profit(run_module, fake_sysfs, proc, config):
    proc.add(100, "small", ksm_stat=ksm_stat_text(10, 30000))
    proc.add(200, "big", ksm_stat=ksm_stat_text(8192, 33161216, merge_any=True))
    proc.add(300, "middle", ksm_stat=ksm_stat_text(500, 2000000, mergeable=False))
    proc.add(400, "idle", ksm_stat=ksm_stat_text(0, 0, rmap=0))  # takes no part: never listed
    proc.add(500, "loser", ksm_stat=ksm_stat_text(0, -6400, rmap=100))  # scanned, nothing merged
    failed, result = run_info(run_module, fake_sysfs, proc, config, top_processes=10)
    assert not failed
    top = result["ksm"]["top_processes"]
    assert [p["pid"] for p in top] == [200, 300, 100, 500]
    assert top[0] == {"pid": 200, "comm": "big", "merging_pages": 8192, "profit_bytes": 33161216,
                      "merge_any": True, "mergeable": True}
    assert top[1]["merge_any"] is False and top[1]["mergeable"] is False

    failed, result = run_info(run_module, fake_sysfs, proc, config, top_processes=2)
    assert [p["pid"] for p in result["ksm"]["top_processes"]] == [200, 300]


def test_top_processes_zero_lists_none(run_module, fake_sysfs, proc, config):
    proc.add(200, "big", ksm_stat=ksm_stat_text(8192, 33161216))
    failed, result = run_info(run_module, fake_sysfs, proc, config)
    assert not failed and result["ksm"]["top_processes"] == []


def test_old_kernel_ksm_merging_pages_only(run_module, fake_sysfs, proc, config):
    proc.add(700, "old", merging_pages=300)
    proc.add(701, "older", merging_pages=900)
    proc.add(702, "none", merging_pages=0)
    failed, result = run_info(run_module, fake_sysfs, proc, config, top_processes=5)
    assert not failed
    assert result["ksm"]["top_processes"] == [
        {"pid": 701, "comm": "older", "merging_pages": 900, "profit_bytes": None, "merge_any": None,
         "mergeable": None},
        {"pid": 700, "comm": "old", "merging_pages": 300, "profit_bytes": None, "merge_any": None,
         "mergeable": None},
    ]


def test_unreadable_or_vanished_processes_are_skipped(run_module, fake_sysfs, proc, config, warned):
    proc.add(200, "big", ksm_stat=ksm_stat_text(8192, 33161216))
    weird = proc.add(201, "weird")
    (weird / "ksm_stat").mkdir()  # reading it fails with EISDIR, like a process that went away
    (proc.root / "202").mkdir()  # a process that exited while /proc was listed
    failed, result = run_info(run_module, fake_sysfs, proc, config, top_processes=5)
    assert not failed
    assert [p["pid"] for p in result["ksm"]["top_processes"]] == [200]
    assert warned == []


def test_permission_denied_on_ksm_stat_warns(run_module, fake_sysfs, proc, config, monkeypatch, warned):
    proc.add(200, "big", ksm_stat=ksm_stat_text(8192, 33161216))
    proc.add(201, "secret", ksm_stat=ksm_stat_text(10, 10))
    real_read = _ksm_info._read_text

    def deny(path):
        if path.endswith(os.path.join("201", "ksm_stat")):
            raise IOError(errno.EACCES, "Permission denied", path)
        return real_read(path)

    monkeypatch.setattr(_ksm_info, "_read_text", deny)
    failed, result = run_info(run_module, fake_sysfs, proc, config, top_processes=5)
    assert not failed
    assert [p["pid"] for p in result["ksm"]["top_processes"]] == [200]
    assert len(warned) == 1 and "1 processes were not readable" in warned[0] and "become" in warned[0]


def test_ksm_stat_parser():
    parsed = _ksm_info.parse_ksm_stat(ksm_stat_text(5, -10, rmap=7, zero=2, merge_any=True) + "garbage\n")
    assert parsed == {"ksm_rmap_items": 7, "ksm_zero_pages": 2, "ksm_merging_pages": 5,
                      "ksm_process_profit": -10, "ksm_merge_any": True, "ksm_mergeable": True}


# --- never changes anything ---------------------------------------------------------------------

def test_writes_nothing(run_module, fake_sysfs, proc, config, digest):
    proc.add(200, "big", ksm_stat=ksm_stat_text(8192, 33161216))
    before = (digest(fake_sysfs), digest(proc.root), digest(config.parent))
    failed, result = run_info(run_module, fake_sysfs, proc, config, top_processes=3)
    assert not failed and result["changed"] is False
    assert result["ksm"]["top_processes"][0]["pid"] == 200
    assert (digest(fake_sysfs), digest(proc.root), digest(config.parent)) == before


@pytest.mark.parametrize("bad, message", [
    ({"top_processes": -1}, "top_processes: invalid value -1"),
    ({"top_processes": "many"}, "top_processes"),
    ({"kernel_config_paths": {"a": 1}}, "kernel_config_paths"),
    ({"no_such_option": 1}, "no_such_option"),
])
def test_bad_input_fails_clearly(run_module, fake_sysfs, proc, config, digest, bad, message):
    before = digest(fake_sysfs)
    failed, result = run_info(run_module, fake_sysfs, proc, config, **bad)
    assert failed
    assert message in result["msg"]
    assert digest(fake_sysfs) == before


# --- node checks: a report, never a verdict ------------------------------------------------------

@pytest.fixture
def no_systemctl(monkeypatch):
    """The module looks systemctl up on PATH; here it finds none, so no unit is queried."""
    monkeypatch.setattr(ksm_info.AnsibleModule, "get_bin_path", lambda self, name, *args, **kwargs: None)


def rc_local_with_foreign_line(tmp_path):
    path = tmp_path / "rc.local"
    path.write_text("#!/bin/sh\necho 1 > /sys/kernel/mm/ksm/run\nexit 0\n")
    return str(path)


def test_node_checks_report_the_probe(run_module, fake_sysfs, proc, config, no_systemctl, tmp_path):
    failed, result = run_info(run_module, fake_sysfs, proc, config, node_checks=True,
                              rc_local_path=str(tmp_path / "absent-rc.local"))
    assert not failed
    assert result["ksm"]["node"] == {"sysfs_writable": True, "systemd": False, "competing": [], "enabled_units": [],
                                     "active_units": []}


def test_no_node_key_without_node_checks(run_module, fake_sysfs, proc, config):
    failed, result = run_info(run_module, fake_sysfs, proc, config)
    assert not failed and "node" not in result["ksm"]


def test_competing_controllers_are_reported_not_failed(run_module, fake_sysfs, proc, config, no_systemctl, tmp_path,
                                                       warned, digest):
    rc_local = rc_local_with_foreign_line(tmp_path)
    before = digest(tmp_path)
    failed, result = run_info(run_module, fake_sysfs, proc, config, node_checks=True, rc_local_path=rc_local)
    assert not failed and not warned
    assert result["ksm"]["node"]["competing"][0]["kind"] == "rc_local"
    assert "(line 2)" in result["ksm"]["node"]["competing"][0]["detail"]
    assert digest(tmp_path) == before


def test_a_host_without_ksm_is_a_report_not_a_failure(run_module, tmp_path, proc, config, no_systemctl):
    failed, result = run_info(run_module, tmp_path / "nothing", proc, config, node_checks=True)
    assert not failed
    assert result["ksm"]["available"] is False and "does not exist" in result["ksm"]["reason"]


@pytest.mark.parametrize("removed", [
    {"require": ["writable"]}, {"competing": "fail"}, {"expect": {"run": 1}}, {"on_mismatch": "report"},
    {"expect_ksmd": True}, {"wait_full_scans": 3}, {"wait_timeout": 5}, {"competing_allow": ["service"]},
])
def test_preflight_and_verification_options_are_gone(run_module, fake_sysfs, proc, config, removed):
    # an _info module only reads: checks and verification live in ksm_sysfs now
    failed, result = run_info(run_module, fake_sysfs, proc, config, **removed)
    assert failed and "Unsupported parameters" in result["msg"] and list(removed)[0] in result["msg"]


def test_bad_node_check_input_fails_clearly(run_module, fake_sysfs, proc, config, digest):
    before = digest(fake_sysfs)
    failed, result = run_info(run_module, fake_sysfs, proc, config, node_checks="perhaps")
    assert failed and "node_checks" in result["msg"]
    assert digest(fake_sysfs) == before
