"""Both containers: package without dependencies, service process preloading the library."""
DEPENDENCY = "ksm_preload-dependency-stream"
LIBRARY = "/usr/lib64/libksm_preload.so"
PACKAGE = "ksm_preload"

testinfra_hosts = ["podman://samepage-container-sysv", "podman://samepage-container-systemd"]


def test_package_installed_without_its_dependencies(host):
    assert host.run("rpm -q %s", PACKAGE).rc == 0
    # download-only fetched the dependency stream; rpm -i --nodeps left it out
    assert host.run("rpm -q %s", DEPENDENCY).rc == 1
    assert host.run("ls /usr/local/src/%s-1.0-*.rpm", DEPENDENCY).rc == 0
    assert host.check_output("rpm -qf %s", LIBRARY).startswith(PACKAGE + "-")
    assert host.file(LIBRARY).is_file


def test_service_process_preloads_the_library(demo):
    assert "LD_PRELOAD=%s" % LIBRARY in demo.environ
    assert LIBRARY in demo.maps
    # the library's constructor opted the whole process in to KSM
    assert "ksm_merge_any: yes" in demo.ksm_stat
