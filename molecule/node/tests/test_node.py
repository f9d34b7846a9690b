"""State left by the node scenario: systemd host with the systemd backend, sysv host with rc.local,
both converged with the balanced profile on the real kernel (their /sys/kernel/mm/ksm is the host's)."""
import pytest

SYSTEMD = "podman://samepage-node-systemd"
SYSV = "podman://samepage-node-sysv"
testinfra_hosts = [SYSTEMD, SYSV]

BALANCED = {"run": "1", "pages_to_scan": "1000", "sleep_millisecs": "50", "advisor_mode": "[none] scan-time"}
BEGIN = "# BEGIN samepage.ksm managed block"
END = "# END samepage.ksm managed block"


def is_systemd(host):
    return host.backend.name == "samepage-node-systemd"


@pytest.mark.parametrize("knob,value", sorted(BALANCED.items()))
def test_live_knobs(host, knob, value):
    assert host.file("/sys/kernel/mm/ksm/" + knob).content_string.strip() == value


def test_sysfs_is_the_host_kernel(host):
    with open("/sys/kernel/mm/ksm/pages_to_scan") as handle:
        assert host.file("/sys/kernel/mm/ksm/pages_to_scan").content_string == handle.read()


def test_rc_local(host):
    rc_local = host.file("/etc/rc.local")
    if is_systemd(host):
        # systemd backend: rc.local (from the rc_local cycle) holds no block of ours any more
        assert not rc_local.exists or BEGIN not in rc_local.content_string
        return
    assert rc_local.is_file and rc_local.mode == 0o755 and rc_local.user == "root"
    text = rc_local.content_string
    assert text.startswith("#!/bin/sh\n")
    block = text[text.index(BEGIN):text.index(END)]
    lines = [line.strip() for line in block.splitlines() if line.strip().startswith("echo")]
    assert lines == [
        "echo none > /sys/kernel/mm/ksm/advisor_mode || true",
        "echo 1000 > /sys/kernel/mm/ksm/pages_to_scan || true",
        "echo 50 > /sys/kernel/mm/ksm/sleep_millisecs || true",
        "echo 1 > /sys/kernel/mm/ksm/run || true",
    ]


def test_systemd_unit(host):
    unit = host.file("/etc/systemd/system/samepage-ksm.service")
    if not is_systemd(host):
        assert not unit.exists
        return
    assert unit.is_file and unit.mode == 0o644
    text = unit.content_string
    assert "ConditionPathExists=/sys/kernel/mm/ksm" in text
    assert "WantedBy=multi-user.target" in text
    assert text.index("pages_to_scan") < text.index("/run")
    assert host.service("samepage-ksm.service").is_enabled
    state = host.run("systemctl show -p LoadState -p UnitFileState samepage-ksm.service").stdout
    assert "LoadState=loaded" in state and "UnitFileState=enabled" in state
    assert host.file("/etc/systemd/system/multi-user.target.wants/samepage-ksm.service").is_symlink
    # no boost in the final state: no relax timer, no other backend's artefacts
    assert not host.file("/etc/systemd/system/samepage-ksm-relax.timer").exists
    assert not host.file("/etc/tmpfiles.d/samepage-ksm.conf").exists
    assert not host.file("/etc/systemd/system/timers.target.wants/samepage-ksm-relax.timer").exists
