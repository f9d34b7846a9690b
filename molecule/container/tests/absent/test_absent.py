"""After state absent (with the package): nothing of ours is left and the services run without it.

Library: the fixture RPM, removed."""
BEGIN = "# BEGIN samepage.ksm"
DROPIN_DIR = "/etc/systemd/system/ksm-demo.service.d"
LIBRARY = "/usr/lib64/libksm_preload.so"
PACKAGE = "ksm_preload"
PRISTINE = "/root/pristine"

testinfra_hosts = ["podman://samepage-container-sysv", "podman://samepage-container-systemd"]


def test_package_and_library_are_gone(host):
    assert host.run("rpm -q %s", PACKAGE).rc == 1
    assert not host.file(LIBRARY).exists


def test_startup_files_are_byte_identical_to_the_originals(host):
    # prepare copied them (cp -p --parents) before the role first ran
    copies = host.check_output("cd %s && find . -type f", PRISTINE).splitlines()
    assert any(path.endswith("/ksm-demo") for path in copies)
    for copy in copies:
        path = copy[1:]
        assert host.file(path).sha256sum == host.file(PRISTINE + path).sha256sum, path
        assert host.file(path).mode == host.file(PRISTINE + path).mode, path


def test_no_drop_in_and_no_block_anywhere(host):
    # the drop-in directory was created by the role, so it went with the drop-in
    assert not host.file(DROPIN_DIR).exists
    found = host.run("grep -rl -e %s -e %s /etc", BEGIN, LIBRARY)
    assert found.rc == 1, "left behind: %s" % found.stdout


def test_service_runs_without_the_library(demo):
    assert not any(entry.startswith("LD_PRELOAD=") for entry in demo.environ)
    assert LIBRARY not in demo.maps
    assert "ksm_merge_any: no" in demo.ksm_stat
