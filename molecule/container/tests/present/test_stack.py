"""Real stack container: the REAL ksm_preload-0.10-3.el6 RPM (built from its EL6 sources), installed
by dnf download + rpm -i --nodeps, preloaded into Debian's own MariaDB, Apache and memcached.

This library marks heap areas above KSMP_MERGE_THRESHOLD with madvise: the services show
ksm_mergeable: yes, not ksm_merge_any (that is the fixture library's prctl)."""
import hashlib
import os
import subprocess

CONTAINER = "samepage-container-stack"
PACKAGE_NVRA = "ksm_preload-0.10-3.el6.x86_64"
LIBRARY = "/usr/lib64/libksm_preload.so"
REAL_SO = "/usr/lib64/libksm_preload.so.0.0.0"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
BUILT_SO = os.path.join(ROOT, "build/fixtures/real/libksm_preload.so.0.0.0")
SERVICES = {"mariadb": ["mariadbd"], "apache2": ["apache2"]}

testinfra_hosts = ["podman://" + CONTAINER]


def host_processes(comms):
    """(host pid, user) of the container's processes with these names, seen from the host."""
    out = subprocess.run(["podman", "top", CONTAINER, "hpid", "comm", "user"], check=True,
                         stdout=subprocess.PIPE, text=True).stdout.splitlines()[1:]
    return [(int(p[0]), p[2]) for p in (line.split() for line in out) if len(p) == 3 and p[1] in comms]


def test_only_the_real_package_was_installed(host):
    assert host.check_output("rpm -q ksm_preload") == PACKAGE_NVRA
    before = set(host.file("/root/rpm-qa.before").content_string.split())
    after = set(host.check_output("rpm -qa").split())
    assert after - before == {PACKAGE_NVRA}
    assert before - after == set()
    # dnf download fetched the package alone; its Requires (kernel, glibc) are not in any repository
    assert host.check_output("ls /usr/local/src").split() == [PACKAGE_NVRA + ".rpm"]
    assert "kernel >= 2.6.32" in host.check_output("rpm -qR ksm_preload")


def test_library_is_the_one_built_from_the_upstream_sources(host):
    assert host.check_output("rpm -qf %s", REAL_SO) == PACKAGE_NVRA
    assert host.check_output("readlink -f %s", LIBRARY) == REAL_SO
    with open(BUILT_SO, "rb") as handle:
        built = hashlib.sha256(handle.read()).hexdigest()
    assert host.check_output("sha256sum %s", REAL_SO).split()[0] == built


def test_every_service_process_maps_the_packaged_library(host):
    inode = host.check_output("stat -L -c %%i %s", REAL_SO)
    for service, comms in SERVICES.items():
        procs = host_processes(comms)
        assert procs, "%s is not running" % service
        for pid, user in procs:
            with open("/proc/%d/maps" % pid) as handle:
                lines = [line for line in handle if line.rstrip().endswith(REAL_SO)]
            # the same file (inode) the package put in /usr/lib64, not some other copy
            assert lines and all(line.split()[4] == inode for line in lines), (service, pid, user)
            with open("/proc/%d/ksm_stat" % pid) as handle:
                stat = handle.read()
            assert "ksm_mergeable: yes" in stat, (service, pid, stat)
            assert "ksm_merge_any: no" in stat, (service, pid, stat)


def test_maps_of_other_users_are_unreadable_inside_the_container(host):
    # why verification accepts ksm_mergeable: root in the container lacks CAP_SYS_PTRACE
    pid = host.file("/run/mysqld/mysqld.pid").content_string.strip()
    assert host.run("cat /proc/%s/maps", pid).rc != 0
    assert "ksm_mergeable: yes" in host.check_output("cat /proc/%s/ksm_stat", pid)


def test_no_systemd_artefacts_in_the_sysv_container(host):
    assert not host.file("/run/systemd/system").exists
    for service in SERVICES:
        assert not host.file("/etc/systemd/system/%s.service.d" % service).exists


def test_services_answer(host):
    assert host.check_output("mariadb -N -e 'SELECT COUNT(*) FROM samepage.items'") == "100000"
    page = host.check_output("python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1/').read().decode())\"")
    assert page.startswith("items=100000")
    assert host.run("python3 -c \"import socket; s=socket.create_connection(('127.0.0.1', 11211)); s.sendall(b'stats\\r\\n'); "
                    "assert s.recv(100).startswith(b'STAT')\"").rc == 0
