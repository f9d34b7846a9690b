"""The opt-in the container role chose on each systemd, and the kernel's view of the service."""
import re

import pytest

DROPIN_DIR = "/etc/systemd/system/ksm-demo.service.d"
SERVICE = "ksm-demo"
HOSTS = {
    # host: (systemd major version, MemoryKSM expected to be chosen)
    "samepage-sd-bookworm": (252, False),
    "samepage-sd-bookworm-backports": (254, False),
    "samepage-sd-trixie": (257, True),
}

testinfra_hosts = ["podman://%s" % name for name in sorted(HOSTS)]


@pytest.fixture
def expected(host):
    return HOSTS[host.backend.name]


def dropins(host):
    return host.run("cat %s/*.conf 2>/dev/null" % DROPIN_DIR).stdout


def main_pid(host):
    pid = host.check_output("systemctl show -p MainPID --value %s", SERVICE)
    assert pid.isdigit() and pid != "0", "%s has no main process" % SERVICE
    return pid


def test_systemd_version_is_the_one_claimed(host, expected):
    version = int(re.match(r"systemd (\d+)", host.check_output("systemctl --version")).group(1))
    assert version == expected[0]


def test_service_runs(host):
    assert host.check_output("systemctl is-active %s", SERVICE) == "active"
    assert host.check_output("systemctl show -p NRestarts --value %s", SERVICE) == "0"


def test_memoryksm_only_where_the_probe_proves_it(host, expected):
    has_memoryksm = re.search(r"^MemoryKSM=yes$", dropins(host), re.M) is not None
    assert has_memoryksm == expected[1], dropins(host)


def test_the_running_service_is_opted_in(host, expected):
    pid = main_pid(host)
    ksm_stat = host.file("/proc/%s/ksm_stat" % pid).content_string
    environ = host.check_output("tr '\\0' '\\n' < /proc/%s/environ", pid)
    print("%s: /proc/%s/ksm_stat:\n%s" % (host.backend.name, pid, ksm_stat))
    if expected[1]:
        assert "ksm_merge_any: yes" in ksm_stat
        assert "LD_PRELOAD" not in environ
    else:
        # The fallback (prctl launcher or preload library) opted the process in some other way.
        assert "ksm_merge_any: yes" in ksm_stat or "libksm_preload" in environ, (ksm_stat, environ)
