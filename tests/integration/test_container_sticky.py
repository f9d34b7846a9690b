"""The container role's ksm_container_optin: auto keeps a service's existing opt-in.

A real SysV container (localhost/samepage-sysv:bookworm, the ksm-demo service started by its
init script). ksm-demo is opted in with preload: the fixture ksm_preload library (prctl in its
constructor), whose RPM from the image's file:// repository is installed with rpm -i --nodeps
first, so the role finds it with rpm -q and skips the dnf download that molecule/container tests.
Then the role runs with optin auto on this kernel, where prctl works, for ksm-demo and a second,
not yet opted-in copy of it (ksm-demo2): ksm-demo must keep preload (the same init script, the
same pid), while ksm-demo2 gets prctl in the same run (what auto picks here). Then
ksm_container_optin: prctl asks for the switch, and it happens (new pid, our prctl block instead
of the preload one); and ksm_container_optin: preload switches ksm-demo2 back from prctl.

Touches no KSM knob (no merging is measured), so no kernel lock.
"""
import json
import os
import pathlib
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
IMAGE = "localhost/samepage-sysv:bookworm"
NAME = "samepage-sticky-sysv"
SERVICE = "ksm-demo"
FRESH = "ksm-demo2"
SCRIPT = "/etc/init.d/ksm-demo"
PIDFILE = "/run/ksm-demo.pid"
ENV = dict(os.environ, CONTAINERS_CONF=str(ROOT / "tests" / "podman" / "containers.conf"))

PLAY = """
- name: Sticky opt-in
  hosts: all
  gather_facts: false
  tasks:
    - name: role
      ansible.builtin.include_role:
        name: samepage.ksm.container
    # the role's own ksm_optin_info call (what it saw on the host), and what it made of it
    - name: result
      ansible.builtin.debug:
        msg: {probe: "{{ __ksm_container_optin_info }}", result: "{{ ksm_container_result }}"}
"""


def podman(*args, check=True):
    return subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True, check=check)


def sh(command):
    proc = podman("exec", NAME, "sh", "-c", command, check=False)
    assert proc.returncode == 0, "%s: %s%s" % (command, proc.stdout, proc.stderr)
    return proc.stdout


def state():
    """(main pid of ksm-demo, sha256 of every file an opt-in of ksm-demo could be in)."""
    pid = sh("cat %s" % PIDFILE).strip()
    files = sh("sha256sum %s /etc/default/ksm-demo; ls -d /etc/systemd/system/ksm-demo.service.d 2>/dev/null; true"
               % SCRIPT)
    return pid, files


@pytest.fixture(scope="module")
def container():
    subprocess.run([str(ROOT / "tests" / "images" / "build.sh"), "sysv"], env=ENV, check=True,
                   capture_output=True)
    podman("rm", "-f", "-t", "0", NAME, check=False)
    podman("run", "-d", "--name", NAME, IMAGE, "/sbin/samepage-sysv-init")
    try:
        deadline = time.monotonic() + 30
        while podman("exec", NAME, "/etc/init.d/ksm-demo", "status", check=False).returncode != 0:
            assert time.monotonic() < deadline, podman("logs", NAME).stdout
            time.sleep(0.2)
        # the package the role's preload needs, installed as the role would (no dnf here: faster)
        sh("rpm -i --nodeps /srv/samepage-repo/ksm_preload-*.rpm && rpm -q ksm_preload")
        # a second service: the same script under another name (its daemon's comm is ksm-demo2)
        sh("sed -e 's/ksm-demo/ksm-demo2/g' -e 's/^KSM_DEMO_SIZE_MB=.*/KSM_DEMO_SIZE_MB=8/' %s > /etc/init.d/%s"
           " && chmod 755 /etc/init.d/%s && ln -s ksm-demo /usr/local/sbin/%s && /etc/init.d/%s start"
           % (SCRIPT, FRESH, FRESH, FRESH, FRESH))
        yield NAME
    finally:
        podman("rm", "-f", "-t", "0", NAME, check=False)


def run_role(tmp_path, extra, services=(SERVICE,)):
    """One ansible-playbook run of the role on the container: (probe, ksm_container_result, changed count)."""
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("%s ansible_connection=containers.podman.podman ansible_python_interpreter=/usr/bin/python3\n"
                         % NAME)
    extra = dict({"ksm_container_service_names": list(services), "ksm_container_install_method": "repo",
                  "ksm_container_verify_failure": "fail"}, **extra)
    env = dict(ENV, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"))
    started = time.monotonic()
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(play),
                           "-e", json.dumps(extra)], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    print("role run %s: %.1f s" % (json.dumps(extra, sort_keys=True), time.monotonic() - started))
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("ansible-playbook printed no JSON:\n%s\n%s" % (proc.stdout[-4000:], proc.stderr[-4000:]))
    assert proc.returncode == 0, proc.stdout[-8000:]
    tasks = {}
    for play_data in data["plays"]:
        for task in play_data["tasks"]:
            tasks[task["task"]["name"]] = task["hosts"][NAME]
    seen = tasks["result"]["msg"]
    return seen["probe"], seen["result"], data["stats"][NAME]["changed"]


def test_auto_keeps_the_existing_optin_until_another_is_asked_for(container, tmp_path):
    # 1. opted in with preload: changed, restarted, the LD_PRELOAD block in the init script
    probe, result, changed = run_role(tmp_path, {"ksm_container_optin": "preload"})
    assert probe["services"][SERVICE] == {"method": None, "optin": None, "path": None}
    assert changed > 0 and result["optin"] == "preload" and result["restarted"] == [SERVICE], result
    assert result["verified"] and result["verified"][0]["ok"], result["verified"]
    script = sh("cat %s" % SCRIPT)
    assert "# BEGIN samepage.ksm LD_PRELOAD ksm-demo" in script and "PRCTL" not in script
    before = state()

    # 2. auto where prctl works: ksm-demo keeps preload (not restarted); ksm-demo2, new, gets prctl
    probe, result, changed = run_role(tmp_path, {"ksm_container_optin": "auto"}, services=(SERVICE, FRESH))
    assert probe["prctl"]["works"] is True, probe["prctl"]
    assert probe["services"] == {SERVICE: {"method": "sysv", "optin": "preload", "path": SCRIPT},
                                 FRESH: {"method": None, "optin": None, "path": None}}
    assert result["kept"] == {SERVICE: "preload"} and result["optin"] == "prctl, preload", result
    assert result["optin_reason"].endswith(
        "; kept: already opted in with preload (ksm-demo); set ksm_container_optin to change it"), result["optin_reason"]
    assert result["optin_reason"].startswith("prctl(PR_SET_MEMORY_MERGE) set in a child survived exec")
    kept, fresh = result["services"]
    assert (kept["name"], kept["kept"], kept["optin"], kept["method"]) == (SERVICE, "sysv", "preload", "auto")
    assert (fresh["name"], fresh["kept"], fresh["optin"], fresh["method"]) == (FRESH, None, "prctl", "prctl")
    assert result["changed"] == [FRESH] and result["restarted"] == [FRESH], result
    assert [v["service"] for v in result["verified"] if v["ok"]] == [FRESH], result["verified"]
    assert state() == before

    # 3. the user asks for prctl: ksm-demo switches, restarts and verifies; ksm-demo2 stays as it is
    probe, result, changed = run_role(tmp_path, {"ksm_container_optin": "prctl"}, services=(SERVICE, FRESH))
    assert changed > 0 and result["optin"] == "prctl" and result["kept"] == {}, result
    assert result["optin_reason"] == "forced by ksm_container_optin"
    assert result["restarted"] == [SERVICE] and result["verified"][0]["ok"], result["verified"]
    script = sh("cat %s" % SCRIPT)
    assert "# BEGIN samepage.ksm PRCTL ksm-demo" in script and "LD_PRELOAD ksm-demo" not in script
    pid, files = state()
    assert pid != before[0] and files != before[1]
    assert "ksm_merge_any: yes" in sh("cat /proc/%s/ksm_stat" % pid)

    # 4. preload asked for by name replaces ksm-demo2's prctl opt-in (ld_preload's own auto would keep it)
    fresh_pid = sh("cat /run/%s.pid" % FRESH).strip()
    probe, result, changed = run_role(tmp_path, {"ksm_container_optin": "preload"}, services=(FRESH,))
    assert probe["services"][FRESH]["method"] == "prctl"
    assert result["services"][0]["method"] == "sysv" and result["restarted"] == [FRESH], result
    assert result["verified"][0]["ok"], result["verified"]
    script = sh("cat /etc/init.d/%s" % FRESH)
    assert "# BEGIN samepage.ksm LD_PRELOAD ksm-demo2" in script and "PRCTL" not in script
    assert sh("cat /run/%s.pid" % FRESH).strip() != fresh_pid
