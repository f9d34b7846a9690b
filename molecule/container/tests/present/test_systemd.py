"""systemd container: a drop-in sets LD_PRELOAD, the unit's main process carries it.

Library: the fixture (prctl in its constructor)."""
import re

BEGIN = "# BEGIN samepage.ksm LD_PRELOAD"
DROPIN = "/etc/systemd/system/ksm-demo.service.d/samepage-ksm.conf"
INIT_SCRIPT = "/etc/init.d/ksm-demo"
LIBRARY = "/usr/lib64/libksm_preload.so"
PIDFILE = "/run/ksm-demo.pid"
SERVICE = "ksm-demo"

testinfra_hosts = ["podman://samepage-container-systemd"]


def test_dropin_sets_ld_preload(host):
    dropin = host.file(DROPIN)
    assert dropin.is_file and dropin.mode == 0o644
    assert "[Service]" in dropin.content_string
    assert re.search(r'^Environment="?LD_PRELOAD=%s"?$' % re.escape(LIBRARY), dropin.content_string, re.M)


def test_systemd_sees_the_environment_and_main_pid(host):
    env = host.check_output("systemctl show -p Environment %s", SERVICE)
    assert "LD_PRELOAD=%s" % LIBRARY in env
    main_pid = host.check_output("systemctl show -p MainPID --value %s", SERVICE)
    assert main_pid == host.file(PIDFILE).content_string.strip()


def test_no_init_script_edit(host):
    assert not host.file(INIT_SCRIPT).exists or BEGIN not in host.file(INIT_SCRIPT).content_string
