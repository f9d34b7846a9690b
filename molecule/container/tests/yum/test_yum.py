"""After the yum branch on the SysV container: yum --downloadonly fetched, rpm -i --nodeps installed.

Library: the fixture RPM (prctl in its constructor)."""
DEPENDENCY = "ksm_preload-dependency-stream"
LIBRARY = "/usr/lib64/libksm_preload.so"
PACKAGE = "ksm_preload"

testinfra_hosts = ["podman://samepage-container-sysv"]


def test_yum_ran_download_only_once(host):
    calls = host.file("/var/log/samepage-yum.log").content_string.splitlines()
    assert calls == ["-y --downloadonly --downloaddir=/usr/local/src install %s" % PACKAGE]


def test_package_without_its_dependencies(host):
    assert host.run("rpm -q %s", PACKAGE).rc == 0
    assert host.run("rpm -q %s", DEPENDENCY).rc == 1
    # the download-only step fetched the dependency stream too; rpm -i --nodeps left it out
    assert host.run("ls /usr/local/src/%s-1.0-*.rpm", DEPENDENCY).rc == 0


def test_service_preloads_the_library(demo):
    assert "LD_PRELOAD=%s" % LIBRARY in demo.environ
    assert LIBRARY in demo.maps
    assert "ksm_merge_any: yes" in demo.ksm_stat
