"""After state absent, systemd no longer hands LD_PRELOAD to the demo unit.

Library: the fixture RPM, removed."""
SERVICE = "ksm-demo"

testinfra_hosts = ["podman://samepage-container-systemd"]


def test_systemd_no_longer_sets_ld_preload(host):
    assert "LD_PRELOAD" not in host.check_output("systemctl show -p Environment %s", SERVICE)
    # systemd reread the units: the removed drop-in is no longer among the unit's sources
    assert "samepage-ksm.conf" not in host.check_output("systemctl show -p DropInPaths %s", SERVICE)
