"""After failures.yml: what the role refused, rolled back or did without a library."""
import pytest

testinfra_hosts = ["podman://samepage-container-sysv", "podman://samepage-container-systemd"]


@pytest.fixture
def name(host):
    return host.backend.name


def test_fragile_unit_rolled_back_and_running(host, name):
    if "systemd" not in name:
        pytest.skip("the fragile unit lives in the systemd container")
    assert host.check_output("systemctl is-active samepage-fragile") == "active"
    assert not host.file("/etc/systemd/system/samepage-fragile.service.d/samepage-ksm.conf").exists
    # the forced memoryksm run wrote nothing either
    assert "MemoryKSM" not in host.check_output("systemctl cat samepage-fragile")


def test_prctl_without_any_library(host, name, demo):
    if "sysv" not in name:
        pytest.skip("prctl ran on the SysV container")
    assert host.run("rpm -q ksm_preload").rc == 1
    assert not host.file("/usr/lib64/libksm_preload.so").exists
    launcher = host.file("/usr/local/sbin/samepage-ksm-merge")
    assert launcher.is_file and launcher.mode == 0o755
    assert not any(v.startswith("LD_PRELOAD=") for v in demo.environ)
    assert "libksm_preload" not in demo.maps
    # the whole process opted in through prctl(PR_SET_MEMORY_MERGE), inherited across exec
    assert "ksm_merge_any: yes" in demo.ksm_stat
