"""Verify the fleet after site.yml, a fleet-wide reboot and report.yml.

Every host is checked over SSH with testinfra (the host's own view), and from the controller
through the fleet state directory (its fake KSM sysfs and the report files).
"""
import json
import os
import pathlib

import pytest
import testinfra

STATE = pathlib.Path(os.environ.get("SAMEPAGE_FLEET_STATE", "/var/tmp/samepage-fleet-molecule"))
FLEET = json.loads((STATE / "fleet.json").read_text())
HOSTS = FLEET["hosts"]
NODES = [h for h in HOSTS if h["group"] == "ksm_nodes"]
CONTAINERS = [h for h in HOSTS if h["group"] == "ksm_containers"]
BALANCED = {"run": "1", "pages_to_scan": "1000", "sleep_millisecs": "50"}


def ssh(host):
    return testinfra.get_host(
        "ssh://root@%s" % host["address"], ssh_identity_file=str(STATE / "id_ed25519"),
        ssh_extra_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")


def test_fleet_has_twenty_hosts_in_both_groups():
    assert len(HOSTS) >= 20
    assert len(NODES) >= 10 and len(CONTAINERS) >= 10


@pytest.mark.parametrize("host", NODES, ids=lambda h: h["name"])
def test_node_knobs_came_back_after_reboot(host):
    remote = ssh(host)
    for knob, value in BALANCED.items():
        assert remote.file("/sys/kernel/mm/ksm/" + knob).content_string.strip() == value
    rc_local = remote.file("/etc/rc.local")
    assert rc_local.mode == 0o755
    assert rc_local.content_string.count("# BEGIN samepage.ksm managed block") == 1


@pytest.mark.parametrize("host", CONTAINERS, ids=lambda h: h["name"])
def test_container_without_services_gets_nothing_unasked(host):
    # The container role installs ksm_preload only for services that preload it (none are named
    # here), and never touches KSM itself: a container cannot set it.
    remote = ssh(host)
    assert remote.run("rpm -q ksm_preload").rc != 0
    assert not remote.file("/usr/lib64/libksm_preload.so").exists
    # its (read-only) KSM directory kept the kernel defaults, and no boot file of ours appeared
    assert remote.file("/sys/kernel/mm/ksm/run").content_string.strip() == "0"
    assert not remote.file("/etc/rc.local").exists


def test_report_totals_match_every_host():
    report = json.loads((STATE / "report" / "ksm-report.json").read_text())
    by_host = {h["host"]: h for h in report["hosts"]}
    assert set(by_host) >= {h["name"] for h in HOSTS}
    page = os.sysconf("SC_PAGE_SIZE")
    for host in NODES:
        entry = by_host[host["name"]]
        assert entry["status"] == "ok"
        assert entry["saved_bytes"] == 256 * page
        assert entry["sharing_ratio"] == 16.0
    total = sum(h["saved_bytes"] for h in report["hosts"] if h["status"] == "ok")
    assert report["totals"]["saved_bytes"] == total
    assert total >= len(NODES) * 256 * page
    markdown = (STATE / "report" / "ksm-report.md").read_text()
    assert "**Fleet total:**" in markdown
    for host in HOSTS:
        assert "| %s |" % host["name"] in markdown
