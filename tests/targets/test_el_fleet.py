"""The fleet rollout on EL-like hosts, from the newest controller that still manages them.

ansible-core 2.16 (the Python running pytest: ``make test-interpreters`` runs this with
.venv-2.16) runs playbooks/site.yml over SSH against a small fleet of tests/fleet/fleet.py hosts
of every flavour: EL7-like nodes (Python 2.7 the only interpreter, /etc/rc.d/rc.local at mode
0644 behind the /etc/rc.local symlink), EL8-like nodes and containers (Python 3.6 as
platform-python) and Debian ones. Site, idempotence, check mode, a reboot of every host and the
fleet report, as the fleet scenario does with 20 Debian hosts. Each host has its own fake KSM
directory: the real kernel is not touched.
"""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
FLEET = ROOT / "tests" / "fleet" / "fleet.py"
STATE = pathlib.Path(os.environ.get("SAMEPAGE_EL_FLEET_STATE", "/var/tmp/samepage-el-fleet"))
NETWORK = "127.0.5"  # 127.0.5.11-16: apart from the fleet scenario's 127.0.0.11-30
BALANCED = {"run": "1", "pages_to_scan": "1000", "sleep_millisecs": "50"}
EXTRA_VARS = {
    "ksm_report_dir": str(STATE / "report"), "ksm_report_top_processes": 0, "ksm_serial": 10,
    "ksm_max_fail_percentage": 0, "ksm_node_profile": "balanced", "ksm_node_persist_backend": "rc_local",
    "ksm_container_services": [], "ksm_container_optin": "preload", "ksm_container_dnf_backend": "dnf4",
}


def fleet(*args):
    return subprocess.run([sys.executable, str(FLEET)] + list(args) + ["--state", str(STATE)],
                          capture_output=True, text=True, check=True)


@pytest.fixture(scope="module")
def hosts():
    subprocess.run([sys.executable, str(FLEET), "down", "--state", str(STATE)], capture_output=True, check=False)
    fleet("up", "--count", "6", "--nodes", "3", "--flavours", "el7,el8,debian", "--network", NETWORK)
    try:
        yield json.loads((STATE / "fleet.json").read_text())["hosts"]
    finally:
        fleet("down")


def playbook(name, *args):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"), ANSIBLE_FORCE_COLOR="0",
               PATH="%s:%s" % (BIN, os.environ.get("PATH", "")))
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(STATE / "inventory.yml"), str(ROOT / "playbooks" / name),
         "-f", "10", "-e", json.dumps(EXTRA_VARS)] + list(args),
        cwd=str(ROOT), env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, "%s %s failed:\n%s\n%s" % (name, args, proc.stdout[-8000:], proc.stderr[-2000:])
    recap = dict(re.findall(r"^(fleet-\d+)\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M))
    return {host: int(changed) for host, changed in recap.items()}, proc.stdout


def ssh(host, command):
    return subprocess.run(
        ["ssh", "-i", str(STATE / "id_ed25519"), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "root@" + host["address"], command],
        capture_output=True, text=True, check=False)


def ksm_knobs(host):
    return {name: (pathlib.Path(host["ksm_dir"]) / name).read_text().strip() for name in BALANCED}


def test_site_idempotence_check_reboot_report(hosts):
    flavours = {h["name"]: h["flavour"] for h in hosts}
    assert sorted(set(flavours.values())) == ["debian", "el7", "el8"]
    el7 = [h for h in hosts if h["flavour"] == "el7"]
    assert el7 and all(h["group"] == "ksm_nodes" for h in el7)
    for host in el7:  # Python 2.7 really is the only interpreter there
        probe = ssh(host, "command -v python3 || echo none; /usr/bin/python -V 2>&1; stat -c '%a %F' /etc/rc.d/rc.local")
        assert probe.stdout.split("\n")[:3] == ["none", "Python 2.7.18", "644 regular file"], probe

    changed, _out = playbook("site.yml", "--skip-tags", "report")
    assert set(changed) == set(flavours), "a host is missing from the recap: %s" % changed
    nodes = [h for h in hosts if h["group"] == "ksm_nodes"]
    assert all(changed[h["name"]] > 0 for h in nodes), changed
    for host in nodes:
        assert ksm_knobs(host) == BALANCED, host["name"]

    again, _out = playbook("site.yml", "--skip-tags", "report")
    assert again == dict.fromkeys(flavours, 0), "second run changed something: %s" % again
    checked, _out = playbook("site.yml", "--skip-tags", "report", "--check", "--diff")
    assert checked == dict.fromkeys(flavours, 0), "check mode reports changes: %s" % checked

    for host in nodes:
        rc_local = "/etc/rc.d/rc.local" if host["flavour"] != "debian" else "/etc/rc.local"
        state = ssh(host, "stat -c '%%a %%F' %s; readlink /etc/rc.local || echo -; grep -c 'BEGIN samepage.ksm' %s" % (
            rc_local, rc_local)).stdout.split("\n")
        assert state[0] == "755 regular file", (host["name"], state)
        if host["flavour"] != "debian":
            assert state[1] == "rc.d/rc.local", "the /etc/rc.local symlink was replaced on %s" % host["name"]
        assert state[2] == "1", (host["name"], state)

    fleet("reboot")
    for host in nodes:
        assert ksm_knobs(host) == BALANCED, "%s (%s) lost its knobs at reboot" % (host["name"], host["flavour"])

    playbook("report.yml")
    report = json.loads((STATE / "report" / "ksm-report.json").read_text())
    text = json.dumps(report)
    for host in nodes:
        assert host["name"] in text, "%s is missing from the report" % host["name"]
