"""Both fixture containers: the fixture package (prctl in its constructor) without dependencies,
the service process preloading it."""
DEPENDENCY = "ksm_preload-dependency-stream"
LIBRARY = "/usr/lib64/libksm_preload.so"
PACKAGE = "ksm_preload"

testinfra_hosts = ["podman://samepage-container-sysv", "podman://samepage-container-systemd"]


def test_package_installed_without_its_dependencies(host):
    assert host.run("rpm -q %s", PACKAGE).rc == 0
    # dnf download fetched the package alone (no dependency resolution); rpm -i --nodeps
    assert host.run("rpm -q %s", DEPENDENCY).rc == 1
    rpms = host.check_output("ls /usr/local/src").split()
    assert len(rpms) == 1 and rpms[0].startswith(PACKAGE + "-0.10-3.samepage."), rpms
    assert host.check_output("rpm -qf %s", LIBRARY).startswith(PACKAGE + "-")
    assert host.file(LIBRARY).is_file


def test_service_process_preloads_the_library(demo):
    assert "LD_PRELOAD=%s" % LIBRARY in demo.environ
    assert LIBRARY in demo.maps
    # the library's constructor opted the whole process in to KSM
    assert "ksm_merge_any: yes" in demo.ksm_stat
