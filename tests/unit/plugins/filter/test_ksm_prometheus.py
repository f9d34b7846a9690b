"""The node_exporter textfile filter, fed with ksm_info results (real gathering code where it can be)."""
import re

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.samepage.ksm.plugins.filter.ksm_prometheus import ksm_prometheus
from ansible_collections.samepage.ksm.plugins.module_utils import _ksm_info

MIB = 1048576
SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})? (?P<value>\S+)$')
LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"(?:,|$)')
# What node_exporter's own ksmd collector exports (checked against the real one in
# tests/integration/test_prometheus.py): the textfile must never export these.
KSMD_COLLECTOR = {"node_ksmd_full_scans_total", "node_ksmd_merge_across_nodes", "node_ksmd_pages_shared",
                  "node_ksmd_pages_sharing", "node_ksmd_pages_to_scan", "node_ksmd_pages_unshared",
                  "node_ksmd_pages_volatile", "node_ksmd_run", "node_ksmd_sleep_seconds"}


def ksm_dict(**overrides):
    counters = {"pages_shared": 2, "pages_sharing": 25600, "pages_unshared": 2560, "pages_volatile": 0,
                "full_scans": 3, "ksm_zero_pages": 10, "pages_scanned": 1000, "pages_skipped": 40,
                "general_profit": 100 * MIB, "stable_node_chains": 0, "stable_node_dups": 0}
    knobs = {"run": 1, "pages_to_scan": 5000, "sleep_millisecs": 20, "use_zero_pages": 1, "smart_scan": 1,
             "max_page_sharing": 256, "stable_node_chains_prune_millisecs": 2000, "merge_across_nodes": 1,
             "advisor_mode": "none", "advisor_max_cpu": 70, "advisor_min_pages_to_scan": 500,
             "advisor_max_pages_to_scan": 30000, "advisor_target_scan_time": 200}
    ksm = {"available": True, "reason": None, "knobs": knobs, "counters": counters, "page_size": 4096,
           "saved_bytes": (25600 + 10) * 4096, "general_profit_bytes": 100 * MIB,
           "ksmd": {"running": True, "pid": 37, "cpu_seconds": 1.5}, "top_processes": [], "host": "hn"}
    ksm.update(overrides)
    return ksm


def parse(text):
    """Check the text exposition format strictly; return {name: {labels tuple: value}} and types."""
    assert text.endswith("\n") and "\n\n" not in text
    samples, helps, types = {}, set(), {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helps, "duplicate HELP for %s" % name
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:]
            assert kind in ("gauge", "counter") and name not in types
            types[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, line
        name = match.group("name")
        assert name in helps and name in types, "%s has no HELP/TYPE before it" % name
        labels = tuple(sorted((m.group("key"), m.group("value"))
                              for m in LABEL.finditer((match.group("labels") or "{}")[1:-1])))
        assert labels not in samples.setdefault(name, {}), "duplicate series %s%s" % (name, labels)
        samples[name][labels] = float(match.group("value"))
    for name, kind in types.items():
        assert name.startswith("samepage_ksm_"), name
        assert name.endswith("_total") == (kind == "counter"), name
        assert name in samples, "%s has a TYPE but no sample" % name
    return samples, types


def plain(samples):
    return {name: series[()] for name, series in samples.items() if () in series}


def test_playbooks_find_the_filter_by_its_fqcn(tmp_path):
    """What report.yml does: a template names the filter by its FQCN and Ansible resolves it."""
    import os as _os
    import pathlib as _pathlib
    import subprocess as _subprocess
    root = _pathlib.Path(__file__).resolve().parents[4]
    play = tmp_path / "play.yml"
    play.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n"
                    "        msg: \"{{ {'available': False} | samepage.ksm.ksm_prometheus }}\"\n")
    env = dict(_os.environ, ANSIBLE_CONFIG=str(root / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(root / "build" / "collections"))
    done = _subprocess.run([str(root / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play)],
                           cwd=str(tmp_path), env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "samepage_ksm_available" in done.stdout


def test_a_ksm_host_gets_what_the_ksmd_collector_lacks():
    samples, types = parse(ksm_prometheus(ksm_dict()))
    values = plain(samples)
    assert values["samepage_ksm_available"] == 1 and values["samepage_ksm_ksmd_running"] == 1
    assert values["samepage_ksm_saved_bytes"] == (25600 + 10) * 4096
    assert values["samepage_ksm_general_profit_bytes"] == 100 * MIB
    assert values["samepage_ksm_zero_pages"] == 10
    assert values["samepage_ksm_pages_scanned_total"] == 1000 and types["samepage_ksm_pages_scanned_total"] == "counter"
    assert values["samepage_ksm_pages_skipped_total"] == 40
    assert values["samepage_ksm_ksmd_cpu_seconds_total"] == 1.5
    assert values["samepage_ksm_page_size_bytes"] == 4096
    assert values["samepage_ksm_use_zero_pages"] == 1 and values["samepage_ksm_smart_scan"] == 1
    assert values["samepage_ksm_max_page_sharing"] == 256
    assert values["samepage_ksm_stable_node_chains_prune_seconds"] == 2.0
    assert values["samepage_ksm_advisor_max_cpu_ratio"] == 0.7
    assert values["samepage_ksm_advisor_min_pages_to_scan"] == 500
    assert values["samepage_ksm_advisor_max_pages_to_scan"] == 30000
    assert values["samepage_ksm_advisor_target_scan_time_seconds"] == 200
    assert samples["samepage_ksm_advisor_mode"] == {(("mode", "none"),): 1.0, (("mode", "scan-time"),): 0.0}
    # nothing node_exporter's ksmd collector already exports, under any name
    for dropped in ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "pages_to_scan",
                    "sleep_seconds", "run", "merge_across_nodes", "full_scans_total"):
        assert "samepage_ksm_" + dropped not in samples
    assert not set(samples) & KSMD_COLLECTOR


def test_negative_general_profit_is_exported_as_negative():
    text = ksm_prometheus(ksm_dict(general_profit_bytes=-123456789))
    assert "\nsamepage_ksm_general_profit_bytes -123456789\n" in text
    assert plain(parse(text)[0])["samepage_ksm_general_profit_bytes"] == -123456789


def test_scan_time_advisor_is_the_active_mode():
    ksm = ksm_dict()
    ksm["knobs"]["advisor_mode"] = "scan-time"
    samples = parse(ksm_prometheus(ksm))[0]
    assert samples["samepage_ksm_advisor_mode"] == {(("mode", "none"),): 0.0, (("mode", "scan-time"),): 1.0}


def test_old_kernel_without_newer_entries():
    ksm = ksm_dict(general_profit_bytes=None)
    ksm["counters"] = {"pages_shared": 1, "pages_sharing": 2, "full_scans": 1}
    ksm["knobs"] = {"run": 1, "pages_to_scan": 100, "sleep_millisecs": 20}
    values = plain(parse(ksm_prometheus(ksm))[0])
    assert set(values) == {"samepage_ksm_available", "samepage_ksm_ksmd_running", "samepage_ksm_ksmd_cpu_seconds_total",
                           "samepage_ksm_page_size_bytes", "samepage_ksm_saved_bytes"}


def test_no_ksm_and_no_ksmd_are_zeros_never_absent():
    ksm = {"available": False, "reason": "/sys/kernel/mm/ksm does not exist", "knobs": {}, "counters": {},
           "page_size": 4096, "saved_bytes": None, "general_profit_bytes": None,
           "ksmd": {"running": False, "pid": None, "cpu_seconds": None}, "top_groups": [{"kind": "unit"}]}
    assert plain(parse(ksm_prometheus(ksm))[0]) == {"samepage_ksm_available": 0, "samepage_ksm_ksmd_running": 0}
    stopped = ksm_dict(ksmd={"running": False, "pid": None, "cpu_seconds": None})
    assert plain(parse(ksm_prometheus(stopped))[0])["samepage_ksm_ksmd_running"] == 0
    del stopped["ksmd"]
    assert plain(parse(ksm_prometheus(stopped))[0])["samepage_ksm_ksmd_running"] == 0


def group(kind, name, profit, pages, procs=1, gid=None):
    return {"kind": kind, "id": gid or name, "name": name, "runtime": None, "processes": procs,
            "merging_pages": pages, "profit_bytes": profit}


def test_groups_are_bounded_and_the_rest_is_summed_into_other():
    groups = [group("container", "db-%d" % i, (20 - i) * MIB, 100 - i, procs=2) for i in range(15)]
    groups.append(group("unit", None, None, 7, gid="cron.service"))
    samples = parse(ksm_prometheus(ksm_dict(top_groups=groups), 3))[0]
    profit = samples["samepage_ksm_group_profit_bytes"]
    assert profit == {
        (("group", "db-0"), ("kind", "container")): 20 * MIB,
        (("group", "db-1"), ("kind", "container")): 19 * MIB,
        (("group", "db-2"), ("kind", "container")): 18 * MIB,
        (("group", "other"), ("kind", "other")): sum(range(6, 18)) * MIB,
    }
    assert samples["samepage_ksm_group_merging_pages"][(("group", "other"), ("kind", "other"))] == \
        sum(100 - i for i in range(3, 15)) + 7
    assert samples["samepage_ksm_group_processes"][(("group", "other"), ("kind", "other"))] == 12 * 2 + 1
    # every group's pages are counted once: the series add up to the groups' total
    assert sum(samples["samepage_ksm_group_merging_pages"].values()) == sum(g["merging_pages"] for g in groups)
    assert sum(profit.values()) == sum(g["profit_bytes"] for g in groups if g["profit_bytes"] is not None)


def test_group_without_name_is_labelled_by_id_and_labels_are_escaped():
    groups = [group("unit", None, MIB, 256, gid="cron.service"),
              group("container", 'we"ird\\name\nx' + "y" * 300, 2 * MIB, 512),
              group("slice", "user.slice", None, 3)]
    text = ksm_prometheus(ksm_dict(top_groups=groups))
    samples = parse(text)[0]
    assert samples["samepage_ksm_group_profit_bytes"][(("group", "cron.service"), ("kind", "unit"))] == MIB
    assert 'group="we\\"ird\\\\name\\nx' in text
    assert max(len(k[0][1]) for k in samples["samepage_ksm_group_profit_bytes"]) < 140  # bounded label length
    # a group without profit (old kernel) has pages and processes, no profit sample
    assert (("group", "user.slice"), ("kind", "slice")) not in samples["samepage_ksm_group_profit_bytes"]
    assert samples["samepage_ksm_group_merging_pages"][(("group", "user.slice"), ("kind", "slice"))] == 3


def test_groups_with_the_same_labels_are_one_series():
    groups = [group("container", "web", MIB, 10, gid="a" * 64), group("container", "web", MIB, 20, gid="b" * 64)]
    samples = parse(ksm_prometheus(ksm_dict(top_groups=groups), 1))[0]
    assert samples["samepage_ksm_group_merging_pages"] == {(("group", "web"), ("kind", "container")): 30,
                                                           (("group", "other"), ("kind", "other")): 0}


def test_zero_groups_sums_everything_and_no_top_groups_means_no_group_series():
    groups = [group("container", "a", MIB, 1), group("unit", "b.service", 2 * MIB, 2)]
    samples = parse(ksm_prometheus(ksm_dict(top_groups=groups), 0))[0]
    assert samples["samepage_ksm_group_profit_bytes"] == {(("group", "other"), ("kind", "other")): 3 * MIB}
    assert not [n for n in parse(ksm_prometheus(ksm_dict()))[0] if n.startswith("samepage_ksm_group_")]


@pytest.mark.parametrize("bad, kwargs, message", [
    ({"changed": False, "ksm": {}}, {}, 'expected the "ksm" dictionary'),
    ("text", {}, 'expected the "ksm" dictionary'),
    (ksm_dict(), {"groups": -1}, "groups must be a whole number >= 0, got -1"),
    (ksm_dict(), {"groups": True}, "groups must be a whole number"),
    (ksm_dict(), {"groups": "3"}, "groups must be a whole number"),
    (ksm_dict(top_groups="web"), {}, "ksm.top_groups must be a list, got str"),
    (ksm_dict(top_groups=["web"]), {}, r"ksm.top_groups\[0\] must be a dictionary, got str"),
])
def test_bad_input(bad, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        ksm_prometheus(bad, **kwargs)


def test_real_gathering_code_feeds_the_filter(fake_sysfs, tmp_path):
    """ksm_info's own gathering code on a fake sysfs tree, straight into the filter: the shapes agree."""
    for name, value in {"pages_shared": 3, "pages_sharing": 3000, "ksm_zero_pages": 5,
                        "general_profit": -4096}.items():
        (fake_sysfs / name).write_text("%d\n" % value)
    info, warnings = _ksm_info.gather(str(fake_sysfs), str(tmp_path / "proc"), top=3,
                                      config_paths=[str(tmp_path / "none")], size=4096, ticks=100)
    assert warnings == []
    values = plain(parse(ksm_prometheus(info))[0])
    assert values["samepage_ksm_saved_bytes"] == 3005 * 4096
    assert values["samepage_ksm_general_profit_bytes"] == -4096
    assert values["samepage_ksm_zero_pages"] == 5
    assert values["samepage_ksm_ksmd_running"] == 0  # no ksmd in the fake /proc
