"""Shared by the container scenario's test phases (present, absent, methods)."""
import collections

import pytest

PIDFILE = "/run/ksm-demo.pid"
SERVICE = "ksm-demo"

DemoProcess = collections.namedtuple("DemoProcess", "pid environ maps ksm_stat")


@pytest.fixture
def demo(host):
    """The demo service's main process as the kernel sees it: environment, maps, ksm_stat."""
    pid = host.file(PIDFILE).content_string.strip()
    assert pid.isdigit(), "no pid in %s: %r" % (PIDFILE, pid)
    assert host.file("/proc/%s/comm" % pid).content_string.strip() == SERVICE
    environ = host.check_output("tr '\\0' '\\n' < /proc/%s/environ", pid).splitlines()
    return DemoProcess(pid, environ, host.file("/proc/%s/maps" % pid).content_string,
                       host.file("/proc/%s/ksm_stat" % pid).content_string)
