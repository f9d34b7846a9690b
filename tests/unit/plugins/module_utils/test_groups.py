"""_groups: cgroup paths of real engines -> container/unit/slice/host, names from state files, KSM use per group."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible_collections.samepage.ksm.plugins.module_utils import _groups

PODMAN_ID = "ac6bb3b1b8b07c3baa98f9abebd594a3059d812b10395806c668f29096860ce4"
DOCKER_ID = "3f4e2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f"

CASES = [
    # podman, cgroupfs manager (this machine): every hierarchy names libpod-<id>
    ("9:name=systemd:/libpod_parent/libpod-%s\n4:memory:/libpod_parent/libpod-%s\n0::/libpod_parent/libpod-%s\n"
     % (PODMAN_ID, PODMAN_ID, PODMAN_ID), ("container", PODMAN_ID, "podman")),
    # podman, systemd manager, a process in a sub-cgroup of the container
    ("0::/machine.slice/libpod-%s.scope/container\n" % PODMAN_ID, ("container", PODMAN_ID, "podman")),
    # conmon is podman's monitor, not the container
    ("0::/machine.slice/libpod-conmon-%s.scope\n" % PODMAN_ID, ("unit", "libpod-conmon-%s.scope" % PODMAN_ID, "systemd")),
    ("0::/system.slice/docker-%s.scope\n" % DOCKER_ID, ("container", DOCKER_ID, "docker")),
    ("12:memory:/docker/%s\n0::/\n" % DOCKER_ID, ("container", DOCKER_ID, "docker")),
    ("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-%s.scope\n" % DOCKER_ID,
     ("container", DOCKER_ID, "containerd")),
    ("0::/kubepods/burstable/pod1234/%s\n" % DOCKER_ID, ("container", DOCKER_ID, None)),
    ("0::/lxc.payload.web01/init.scope\n", ("lxc", "web01", "lxc")),
    ("4:memory:/lxc/db02\n1:name=systemd:/lxc/db02/system.slice/mysql.service\n", ("lxc", "db02", "lxc")),
    ("7:ve:/101\n6:beancounter:/101\n1:name=systemd:/101/system.slice/httpd.service\n", ("openvz", "101", "openvz")),
    ("7:ve:/\n6:beancounter:/\n1:name=systemd:/system.slice/sshd.service\n", ("unit", "sshd.service", "systemd")),
    ("0::/system.slice/mariadb.service\n", ("unit", "mariadb.service", "systemd")),
    ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome.scope\n", ("unit", "app-gnome.scope", "systemd")),
    ("0::/machine.slice\n", ("slice", "machine.slice", "systemd")),
    # the v2 line wins over a v1 controller placing the process elsewhere
    ("4:memory:/process_api/499182060be88cf32764b9001a113392\n0::/\n", ("host", "/", None)),
    ("0::/\n", ("host", "/", None)),
    ("", ("host", "/", None)),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_classify(text, expected):
    group = _groups.classify(_groups.parse_cgroup(text))
    assert (group["kind"], group["id"], group["runtime"]) == expected


def plant(proc, pid, cgroup, ksm_stat=None):
    base = proc / str(pid)
    base.mkdir(parents=True)
    (base / "cgroup").write_text(cgroup)
    (base / "comm").write_text("proc%d\n" % pid)
    if ksm_stat is not None:
        (base / "ksm_stat").write_text(ksm_stat)


def stat(merging, profit, zero=0):
    return ("ksm_rmap_items %d\nksm_zero_pages %d\nksm_merging_pages %d\nksm_process_profit %d\n"
            "ksm_merge_any: yes\nksm_mergeable: yes\n" % (merging, zero, merging, profit))


def test_top_groups_sums_by_container_and_reads_names(tmp_path):
    proc = tmp_path / "proc"
    root = tmp_path / "root"
    state = root / "var/lib/containers/storage/overlay-containers"
    state.mkdir(parents=True)
    state.joinpath("containers.json").write_text(json.dumps([{"id": PODMAN_ID, "names": ["web1"]}]))
    docker = root / "var/lib/docker/containers" / DOCKER_ID
    docker.mkdir(parents=True)
    docker.joinpath("config.v2.json").write_text(json.dumps({"Name": "/cache"}))
    podman_cg = "0::/libpod_parent/libpod-%s\n" % PODMAN_ID
    plant(proc, 10, podman_cg, stat(1000, 4000000))
    plant(proc, 11, podman_cg, stat(500, 2000000))
    plant(proc, 12, podman_cg, stat(0, 0))              # in the container, takes no part
    plant(proc, 20, "0::/system.slice/docker-%s.scope\n" % DOCKER_ID, stat(2000, 8000000))
    plant(proc, 30, "0::/system.slice/mariadb.service\n", stat(10, 30000))
    plant(proc, 40, "0::/\n")                           # no ksm_stat at all
    groups, denied = _groups.top_groups(str(proc), 10, 4096, root=str(root))
    assert denied == 0
    assert [(g["kind"], g["name"], g["runtime"], g["processes"], g["merging_pages"], g["profit_bytes"]) for g in groups] == [
        ("container", "cache", "docker", 1, 2000, 8000000),
        ("container", "web1", "podman", 2, 1500, 6000000),
        ("unit", "mariadb.service", "systemd", 1, 10, 30000),
    ]
    assert set(groups[0]) == {"kind", "id", "name", "runtime", "processes", "merging_pages", "profit_bytes"}
    assert _groups.top_groups(str(proc), 1, 4096, root=str(root))[0][0]["id"] == DOCKER_ID
    assert _groups.top_groups(str(proc), 0, 4096) == ([], 0)


def test_top_groups_tolerates_vanished_and_old_kernels(tmp_path):
    proc = tmp_path / "proc"
    plant(proc, 10, "0::/system.slice/a.service\n", stat(100, 1))
    # a process that vanished between listing and reading: cgroup file gone
    (proc / "11").mkdir()
    (proc / "11" / "ksm_stat").write_text(stat(5, 5))
    # kernel before 6.1: only ksm_merging_pages, no profit
    (proc / "12").mkdir()
    (proc / "12" / "ksm_merging_pages").write_text("64\n")
    (proc / "12" / "cgroup").write_text("0::/system.slice/b.service\n")
    groups, denied = _groups.top_groups(str(proc), 5, 4096, root=str(tmp_path / "none"))
    assert [(g["id"], g["merging_pages"], g["profit_bytes"]) for g in groups] == [
        ("b.service", 64, None), ("a.service", 100, 1)]
    assert denied == 0


def test_podman_short_id_and_unreadable_state(tmp_path):
    state = tmp_path / "var/lib/containers/storage/overlay-containers"
    state.mkdir(parents=True)
    state.joinpath("containers.json").write_text("{not json")
    names = _groups.NameResolver(str(tmp_path))
    assert names.name({"kind": "container", "id": PODMAN_ID, "runtime": "podman", "name": None}) is None
    state.joinpath("containers.json").write_text(json.dumps([{"id": PODMAN_ID, "names": ["web1", "alias"]}]))
    names = _groups.NameResolver(str(tmp_path))
    assert names.name({"kind": "container", "id": PODMAN_ID[:12], "runtime": "podman", "name": None}) == "web1"
    assert names.name({"kind": "unit", "id": "x.service", "runtime": "systemd", "name": "x.service"}) == "x.service"
