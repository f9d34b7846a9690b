"""_node_checks: the node probe against fake trees and a fake systemctl, and competing blockers."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.samepage.ksm.plugins.module_utils import _node_checks
from ansible_collections.samepage.ksm.plugins.module_utils._persist import BEGIN, END

OURS = ["samepage-ksm.service", "samepage-ksm-relax.service", "samepage-ksm-relax.timer"]


class FakeSystemctl:
    """systemctl show --property=Id,UnitFileState,ActiveState -- UNIT...: one block per unit."""

    def __init__(self, states=None, rc=0):
        self.states = states or {}
        self.rc = rc
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)
        if self.rc:
            return self.rc, "", "Failed to connect to bus"
        units = argv[argv.index("--") + 1:]
        blocks = []
        for unit in units:
            enabled, active = self.states.get(unit, ("", "inactive"))
            blocks.append("Id=%s\nUnitFileState=%s\nActiveState=%s\n" % (unit, enabled, active))
        return 0, "\n".join(blocks), ""


@pytest.fixture
def node(tmp_path):
    """A fake root with a writable KSM sysfs, an empty /proc and no init system."""
    root = tmp_path / "root"
    sysfs = root / "sys" / "kernel" / "mm" / "ksm"
    sysfs.mkdir(parents=True)
    (sysfs / "run").write_text("0\n")
    (root / "proc").mkdir()
    (root / "etc" / "init.d").mkdir(parents=True)
    return root


def run_probe(root, systemctl=None, rc_local=None, competing=True):
    rc_local_path = str(root / "etc" / "rc.local") if rc_local is None else rc_local
    return _node_checks.probe(str(root / "sys" / "kernel" / "mm" / "ksm"), rc_local_path, systemctl=systemctl,
                              root=str(root), proc_path=str(root / "proc"), competing=competing)


def systemd_root(root):
    (root / "run" / "systemd" / "system").mkdir(parents=True)
    return root


def test_clean_host_without_systemd(node):
    assert run_probe(node) == {"sysfs_writable": True, "systemd": False, "competing": [], "enabled_units": [],
                               "active_units": []}


def test_read_only_sysfs_is_not_writable(node, monkeypatch):
    # Root ignores file modes, so access(2) is stubbed as a read-only /sys answers it (EROFS);
    # the molecule node scenario runs the real case in a container with a read-only /sys.
    run = str(node / "sys" / "kernel" / "mm" / "ksm" / "run")
    real_access = os.access
    monkeypatch.setattr(_node_checks.os, "access", lambda path, mode: False if path == run else real_access(path, mode))
    assert run_probe(node)["sysfs_writable"] is False


def test_systemd_directory_without_systemctl_is_not_systemd(node):
    systemd_root(node)
    assert run_probe(node, systemctl=None)["systemd"] is False


def test_systemd_host_one_call_for_every_unit(node):
    systemctl = FakeSystemctl({"ksmtuned.service": ("enabled", "active"), "samepage-ksm.service": ("enabled", "inactive"),
                               "samepage-ksm-relax.timer": ("enabled", "active")})
    result = run_probe(systemd_root(node), systemctl)
    assert len(systemctl.calls) == 1
    assert systemctl.calls[0][-5:] == ["ksmtuned.service", "ksm.service"] + OURS
    assert result["systemd"] is True
    assert result["competing"] == [{"kind": "service", "name": "ksmtuned",
                                    "detail": "systemd unit ksmtuned.service is enabled, active"}]
    assert result["enabled_units"] == ["samepage-ksm.service", "samepage-ksm-relax.timer"]
    assert result["active_units"] == ["samepage-ksm-relax.timer"]


def test_without_competing_only_our_units_are_asked_and_nothing_else_read(node):
    (node / "etc" / "rc.local").write_text("#!/bin/sh\necho 1 > /sys/kernel/mm/ksm/run\n")
    systemctl = FakeSystemctl({"ksmtuned.service": ("enabled", "active"), "samepage-ksm.service": ("enabled", "active")})
    result = run_probe(systemd_root(node), systemctl, competing=False)
    assert systemctl.calls[0][systemctl.calls[0].index("--") + 1:] == OURS
    assert result["competing"] == [] and result["enabled_units"] == ["samepage-ksm.service"]
    assert result["active_units"] == ["samepage-ksm.service"]


@pytest.mark.parametrize("enabled, active, competing", [
    ("enabled", "inactive", True),
    ("enabled-runtime", "inactive", True),
    ("disabled", "active", True),
    ("disabled", "activating", True),
    ("disabled", "inactive", False),
    ("masked", "inactive", False),
    ("", "inactive", False),  # not installed
])
def test_systemd_service_states(node, enabled, active, competing):
    systemctl = FakeSystemctl({"ksm.service": (enabled, active)})
    result = run_probe(systemd_root(node), systemctl)
    assert bool(result["competing"]) is competing
    if competing:
        assert result["competing"][0]["name"] == "ksm"


def test_systemctl_failure_is_an_error_not_a_clean_host(node):
    with pytest.raises(OSError, match="systemctl show failed"):
        run_probe(systemd_root(node), FakeSystemctl(rc=1))


def test_sysv_service_started_at_boot(node):
    script = node / "etc" / "init.d" / "ksmtuned"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert run_probe(node)["competing"] == []  # installed but not started at boot
    (node / "etc" / "rc3.d").mkdir()
    os.symlink("../init.d/ksmtuned", str(node / "etc" / "rc3.d" / "S20ksmtuned"))
    result = run_probe(node)
    assert [item["kind"] for item in result["competing"]] == ["service"]
    assert "S20ksmtuned" in result["competing"][0]["detail"]


def test_running_ksmtuned_process_without_a_service(node):
    pid = node / "proc" / "4321"
    pid.mkdir()
    (pid / "comm").write_text("ksmtuned\n")
    other = node / "proc" / "17"
    other.mkdir()
    (other / "comm").write_text("sshd\n")
    assert run_probe(node)["competing"] == [{"kind": "process", "name": "ksmtuned",
                                             "detail": "a ksmtuned process is running"}]


def test_ksmtuned_service_and_process_are_reported_once(node):
    (node / "proc" / "4321").mkdir()
    (node / "proc" / "4321" / "comm").write_text("ksmtuned\n")
    systemctl = FakeSystemctl({"ksmtuned.service": ("enabled", "active")})
    result = run_probe(systemd_root(node), systemctl)
    assert [item["kind"] for item in result["competing"]] == ["service"]


@pytest.mark.parametrize("conf, found", [
    ("[sysfs]\n/sys/kernel/mm/ksm/run=1\n", True),
    ("[sysfs]\n# /sys/kernel/mm/ksm/run=1\n; /sys/kernel/mm/ksm/run=0\n", False),
    ("[cpu]\ngovernor=performance\n", False),
])
def test_active_tuned_profile(node, conf, found):
    (node / "etc" / "tuned").mkdir()
    (node / "etc" / "tuned" / "active_profile").write_text("virtual-host custom\n")
    profile = node / "usr" / "lib" / "tuned" / "custom"
    profile.mkdir(parents=True)
    (profile / "tuned.conf").write_text(conf)
    result = run_probe(node)
    if found:
        assert result["competing"] == [{"kind": "tuned", "name": "custom", "detail": (
            "active tuned profile custom writes /sys/kernel/mm/ksm (/usr/lib/tuned/custom/tuned.conf)")}]
    else:
        assert result["competing"] == []


def test_rc_local_lines_outside_our_block(node):
    rc_local = node / "etc" / "rc.local"
    rc_local.write_text("#!/bin/sh\n# echo 1 > /sys/kernel/mm/ksm/run\n%s\necho 1 > /sys/kernel/mm/ksm/run\n%s\n"
                        "echo 2000 > /sys/kernel/mm/ksm/pages_to_scan\nexit 0\n" % (BEGIN, END))
    result = run_probe(node)
    assert result["competing"] == [{"kind": "rc_local", "name": str(rc_local), "detail": (
        "%s writes KSM knobs outside the samepage.ksm block (line 6)" % rc_local)}]


def test_rc_local_with_only_our_block_is_clean(node):
    (node / "etc" / "rc.local").write_text("#!/bin/sh\n%s\necho 1 > /sys/kernel/mm/ksm/run\n%s\n" % (BEGIN, END))
    assert run_probe(node)["competing"] == []


def test_rc_local_writing_a_custom_sysfs_path(node):
    sysfs = str(node / "sys" / "kernel" / "mm" / "ksm")
    (node / "etc" / "rc.local").write_text("#!/bin/sh\necho 1 > %s/run\n" % sysfs)
    assert run_probe(node)["competing"][0]["kind"] == "rc_local"


def test_unreadable_rc_local_is_skipped(node):
    assert run_probe(node, rc_local=str(node / "nowhere" / "rc.local"))["competing"] == []


def test_probe_writes_nothing(node, digest):
    (node / "etc" / "rc.local").write_text("#!/bin/sh\necho 1 > /sys/kernel/mm/ksm/run\n")
    before = digest(node)
    run_probe(systemd_root(node), FakeSystemctl())
    assert digest(node) == before


# --- blockers -----------------------------------------------------------------------------------

def test_competing_blockers_spare_the_allowed_kinds():
    found = [{"kind": "service", "name": "ksm"}, {"kind": "tuned", "name": "virtual-host"}]
    assert _node_checks.competing_blockers(found, ["service"]) == [{"kind": "tuned", "name": "virtual-host"}]
    assert _node_checks.competing_blockers(found, []) == found


def test_parse_systemctl_show_blocks():
    text = "Id=a.service\nUnitFileState=enabled\n\nId=b.service\nUnitFileState=\nActiveState=inactive\n"
    assert _node_checks.parse_systemctl_show(text) == [
        {"Id": "a.service", "UnitFileState": "enabled"},
        {"Id": "b.service", "UnitFileState": "", "ActiveState": "inactive"}]
