"""After the air-gapped installs (file on the SysV container, url on the systemd one).

Library: the fixture RPM (prctl in its constructor)."""
DEPENDENCY = "ksm_preload-dependency-stream"
LIBRARY = "/usr/lib64/libksm_preload.so"
PACKAGE = "ksm_preload"

testinfra_hosts = ["podman://samepage-container-sysv", "podman://samepage-container-systemd"]


def test_package_came_from_the_file_or_url_alone(host):
    assert host.run("rpm -q %s", PACKAGE).rc == 0
    assert host.run("rpm -q %s", DEPENDENCY).rc == 1
    # no repository was configured and the download directory started empty: the only RPM
    # there is the one the file or url method put there
    rpms = host.check_output("ls /usr/local/src").split()
    assert len(rpms) == 1 and rpms[0].startswith(PACKAGE + "-") and rpms[0].endswith(".rpm"), rpms
    assert not host.file("/etc/yum.repos.d/samepage-fixtures.repo").exists


def test_service_preloads_the_library_again(demo):
    assert "LD_PRELOAD=%s" % LIBRARY in demo.environ
    assert LIBRARY in demo.maps
    assert "ksm_merge_any: yes" in demo.ksm_stat
