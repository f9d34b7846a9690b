#!/usr/bin/env python
"""Many SSH-reachable test hosts on one machine, for fleet-scale runs of the collection.

    fleet.py up --count N [--nodes K] [--network 127.0.0] [--flavours debian,el7,el8] --rootfs-image IMAGE --state DIR
    fleet.py down --state DIR
    fleet.py inventory --state DIR [--output FILE]
    fleet.py status [--state DIR]
    fleet.py reboot --state DIR [HOST ...]

A host is a process tree in its own mount, pid and uts namespaces (``unshare``):
- root filesystem: an overlayfs whose lower dir is ONE read-only rootfs exported once from the
  image into the state dir, with the host's own upper/work dirs;
- ``sshd -D`` as PID 1, listening on 127.0.0.<10+i>:22 only (loopback, one address per host;
  ``--network 127.0.1`` moves a second fleet to 127.0.1.<10+i>),
  root login with an ed25519 key generated into the state dir;
- hostname ``fleet-NN``;
- its own fake KSM directory (plain files holding the kernel's default knobs and zero counters)
  bind-mounted over /sys/kernel/mm/ksm; the rest of /sys is a read-only sysfs, so nothing a host
  does can reach the real kernel's KSM knobs;
- a private /proc: the host sees its own processes only. Consequence: no ``ksmd`` kernel thread
  is visible inside a host (roles must be told not to insist on it: ``ksm_node_verify_ksmd``);
  /proc/config.gz is the real kernel's, and /boot/config-<uname -r> (CONFIG_KSM=y) is present;
- no init system: at start (and at ``reboot``) PID 1 runs ``/etc/rc.local start`` when it is
  executable, then execs sshd. ``reboot`` resets the fake KSM files to the kernel's defaults
  (what a real reboot does to sysfs) and keeps the host's disk (upper dir), so persistence is
  tested for real.

Host flavours (``--flavours``, cycled over the nodes and over the containers; default debian):
- ``debian``: the image as it is (Python 3 at /usr/bin/python3, /etc/rc.local, /etc/default);
- ``el7``: an EL7-like host: Python 2.7 is the ONLY interpreter (pyenv's 2.7, bind-mounted
  read-only from the caller's pyenv root, as /usr/bin/python; /usr/bin/python3* hidden by overlay
  whiteouts), ``/etc/rc.d/rc.local`` at mode 0644 with the ``/etc/rc.local`` symlink to it,
  ``/etc/sysconfig/`` and ``/usr/lib64/``. Only nodes get it: the container role's download-only
  step on EL7 needs yum, which Debian userland does not have;
- ``el8``: an EL8-like host: pyenv's Python 3.6 as /usr/libexec/platform-python (the interpreter
  Ansible is told to use; /usr/bin/python3 stays for dnf, as EL8's platform-python serves dnf),
  the same rc.local symlink, /etc/sysconfig/ and /usr/lib64/.

Hosts form two inventory groups, interleaved: ``ksm_nodes`` (hardware nodes, writable fake KSM
directory) and ``ksm_containers`` (OpenVZ-style containers: the KSM directory is read-only, as
it is inside a container).

Every mount lives inside a host's mount namespace, never in the caller's: when a host's
processes die, its mounts die with them, so a crash cannot leave mounts behind. ``up`` tears
down what it started when it fails; ``down`` kills every host it recorded, removes the state dir
and is safe to run twice.
"""
import argparse
import ipaddress
import json
import os
import pathlib
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
sys.path.insert(0, str(ROOT / "plugins" / "module_utils"))

import ksm_knobs  # noqa: E402  (the kernel's default knob values)
from _ksm import COUNTERS, KNOBS  # noqa: E402  (every knob and counter name the kernel exposes)

DEFAULT_IMAGE = "localhost/samepage-fleet:bookworm"
DEFAULT_STATE = os.environ.get("SAMEPAGE_FLEET_STATE", "/var/tmp/samepage-fleet")
STATE_FILE = "fleet.json"
PREFIX = "samepage-fleet"
DEFAULT_NETWORK = "127.0.0"  # host i (1-based) listens on <network>.<FIRST_OCTET + i>
FIRST_OCTET = 10
MAX_HOSTS = 254 - FIRST_OCTET
# A killed ``up`` takes its export pipeline along: no tar left writing into a removed dir.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]
SSHD = "/usr/sbin/sshd"
FLAVOURS = ("debian", "el7", "el8")
# Flavour -> (pyenv version prefix, path of the interpreter inside the host)
FLAVOUR_PYTHON = {"el7": ("2.7", "/usr/bin/python"), "el8": ("3.6", "/usr/libexec/platform-python")}
EL7_RC_LOCAL = ("#!/bin/bash\n"
                "# THIS FILE IS ADDED FOR COMPATIBILITY PURPOSES\n"
                "#\n"
                "# Please note that you must run 'chmod +x /etc/rc.d/rc.local' to ensure\n"
                "# that this script will be executed during boot.\n"
                "\n"
                "touch /var/lock/subsys/local\n")

# PID 1 of a host's namespaces, run by the host's sh: build the root, switch to it, boot.
# $1 hostdir  $2 lower rootfs  $3 hostname  $4 listen address  $5 ksm mount options (rw|ro)
# $6 a Python installation to bind-mount read-only at the same path (EL flavours) or ""
HOST_INIT = r"""
set -eu
hostdir=$1 lower=$2 name=$3 addr=$4 ksm_mode=$5 python_dir=$6
new=$hostdir/root
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$hostdir/upper,workdir=$hostdir/work" "$new"
if [ -n "$python_dir" ]; then
  mkdir -p "$new$python_dir"
  mount --bind "$python_dir" "$new$python_dir"
  mount -o remount,bind,ro "$new$python_dir"
fi
mount -t proc -o nosuid,nodev,noexec proc "$new/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$new/sys"
mount --bind "$hostdir/ksm" "$new/sys/kernel/mm/ksm"
if [ "$ksm_mode" = ro ]; then mount -o remount,bind,ro "$new/sys/kernel/mm/ksm"; fi
# Refuse to boot on the real KSM directory: the fake one is a plain directory, not sysfs.
if [ "$(stat -f -c %T "$new/sys/kernel/mm/ksm")" = sysfs ]; then
  echo "fake KSM directory is not mounted over $new/sys/kernel/mm/ksm" >&2; exit 1
fi
mount -t tmpfs -o nosuid,mode=0755,size=4m dev "$new/dev"
for spec in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read -r node major minor <<EOF
$spec
EOF
  mknod -m 0666 "$new/dev/$node" c "$major" "$minor"
done
mkdir "$new/dev/pts" "$new/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$new/dev/pts"
ln -s pts/ptmx "$new/dev/ptmx"
ln -s /proc/self/fd "$new/dev/fd"
mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$new/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=0755,size=16m run "$new/run"
mkdir -p "$new/run/sshd" "$new/run/lock"
hostname "$name"
cd "$new"
pivot_root . .
umount -l .
cd /
if [ -x /etc/rc.local ]; then /etc/rc.local start || echo "rc.local failed: $?" >&2; fi
exec """ + SSHD + r""" -D -e -o "ListenAddress=$addr:22" -o PermitRootLogin=prohibit-password \
  -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no -o UsePAM=no -o UseDNS=no \
  -o PidFile=none -o MaxStartups=100:30:200 -o MaxSessions=100
"""


def log(message):
    sys.stderr.write("fleet: %s\n" % message)


def die(message):
    log(message)
    sys.exit(1)


def run(cmd, check=True, **kwargs):
    return subprocess.run(cmd, check=check, **kwargs)


def host_name(index):
    return "fleet-%02d" % index


def host_address(index, network=DEFAULT_NETWORK):
    return "%s.%d" % (network, FIRST_OCTET + index)


def loopback_network(text):
    """argparse type: the first three octets of a loopback address (127.x.y)."""
    try:
        address = ipaddress.ip_address(text + ".1")
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise argparse.ArgumentTypeError("%r: expected the first three octets of a loopback "
                                         "address, e.g. 127.0.0 or 127.0.1" % text)
    return text


def is_node(index, count, nodes):
    """Spread K nodes evenly over N hosts (K=N/2: odd hosts are nodes, even ones containers)."""
    return ((index - 1) * nodes) % count < nodes


def flavour_list(text):
    """argparse type: comma-separated host flavours."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in FLAVOURS]
    if not names or bad:
        raise argparse.ArgumentTypeError("%r: expected a comma-separated list of %s" % (text, ", ".join(FLAVOURS)))
    return names


def pyenv_python_dir(root, prefix):
    """The newest pyenv installation of a version prefix (2.7 -> <root>/versions/2.7.18)."""
    versions = sorted((p for p in (pathlib.Path(root) / "versions").glob(prefix + ".*")
                       if (p / "bin" / "python").exists()),
                      key=lambda p: [int(x) for x in p.name.split(".") if x.isdigit()])
    if not versions:
        raise RuntimeError("no Python %s under %s/versions (the EL flavours need pyenv's)" % (prefix, root))
    return versions[-1]


def assign_flavours(index, count, nodes, flavours):
    """Cycle the flavours over the nodes and over the containers (EL7-like: nodes only)."""
    node = is_node(index, count, nodes)
    position = sum(1 for i in range(1, index) if is_node(i, count, nodes) == node)
    usable = flavours if node else [f for f in flavours if f != "el7"] or ["debian"]
    return usable[position % len(usable)]


def make_flavour(upper, flavour, python_dir):
    """Write what makes a host EL-like into its overlay upper dir (the shared rootfs stays Debian)."""
    if flavour == "debian":
        return None
    etc = upper / "etc"
    (etc / "rc.d").mkdir(parents=True, exist_ok=True)
    (etc / "rc.d" / "rc.local").write_text(EL7_RC_LOCAL)
    os.chmod(etc / "rc.d" / "rc.local", 0o644)
    os.symlink("rc.d/rc.local", str(etc / "rc.local"))
    (etc / "sysconfig").mkdir(exist_ok=True)
    (upper / "usr" / "lib64").mkdir(parents=True, exist_ok=True)
    interpreter = pathlib.Path(FLAVOUR_PYTHON[flavour][1].lstrip("/"))
    (upper / interpreter.parent).mkdir(parents=True, exist_ok=True)
    os.symlink(str(python_dir / "bin" / "python"), str(upper / interpreter))
    if flavour == "el7":
        # overlayfs whiteouts (0/0 character devices) hide Debian's Python 3 from this host.
        bin_dir = upper / "usr" / "bin"
        for python3 in ("python3", "python3.%d" % sys.version_info[1], "python3.11"):
            if not (bin_dir / python3).exists():
                os.mknod(str(bin_dir / python3), 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    return "/" + str(interpreter)


def fake_ksm_files():
    """File name -> content of a freshly booted kernel's /sys/kernel/mm/ksm."""
    files = {}
    for spec in KNOBS:
        if spec.name not in ksm_knobs.DEFAULTS:
            continue
        value = ksm_knobs.DEFAULTS[spec.name]
        if spec.kind == "choice":
            text = " ".join("[%s]" % c if c == value else c for c in spec.choices)
        else:
            text = str(value)
        files[spec.name] = text + "\n"
    for name in COUNTERS:
        files[name] = "0\n"
    return files


def reset_fake_ksm(directory):
    """Put the kernel's boot-time values back; forget files a run may have added."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = fake_ksm_files()
    for entry in directory.iterdir():
        if entry.name not in wanted:
            entry.unlink()
    for name, text in wanted.items():
        (directory / name).write_text(text)
        os.chmod(directory / name, 0o644)


# ---------------------------------------------------------------- state
def load_state(state_dir):
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def save_state(state_dir, state):
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, state_dir / STATE_FILE)


# ---------------------------------------------------------------- processes
def pid_cmdline(pid):
    try:
        return pathlib.Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0")
    except OSError:
        return None


def ours(pid, state_dir):
    """True when pid is still the unshare we started for this state dir (not a reused pid)."""
    cmdline = pid_cmdline(pid)
    return bool(cmdline) and cmdline[0].endswith(b"unshare") and \
        any(str(state_dir).encode() in arg for arg in cmdline)


def kill_hosts(state_dir, hosts, timeout=10.0):
    """SIGKILL each host's unshare; --kill-child takes its PID 1 and so the whole namespace."""
    pids = [h["pid"] for h in hosts if h.get("pid") and ours(h["pid"], state_dir)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    children = []
    for pid in pids:
        children.extend(h["init_pid"] for h in hosts if h.get("pid") == pid and h.get("init_pid"))
    deadline = time.monotonic() + timeout
    for pid in pids + children:
        while pid_cmdline(pid) is not None and _not_zombie_reaped(pid):
            if time.monotonic() > deadline:
                die("process %d did not exit after SIGKILL" % pid)
            time.sleep(0.02)


def _not_zombie_reaped(pid):
    try:
        # Our own children must be reaped; others' are reaped by init once dead.
        done, _status = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        try:
            status = pathlib.Path("/proc/%d/stat" % pid).read_text()
        except OSError:
            return False
        return status.rsplit(")", 1)[1].split()[0] != "Z"


def namespace_child(pid, timeout=5.0):
    """The PID 1 that unshare --fork started (its only child)."""
    deadline = time.monotonic() + timeout
    path = pathlib.Path("/proc/%d/task/%d/children" % (pid, pid))
    while time.monotonic() < deadline:
        try:
            children = path.read_text().split()
        except OSError:
            return None
        if children:
            return int(children[0])
        time.sleep(0.005)
    return None


def start_host(state, host):
    state_dir = pathlib.Path(state["state_dir"])
    hostdir = state_dir / "hosts" / host["name"]
    logfile = open(hostdir / "console.log", "ab")
    proc = subprocess.Popen(
        ["unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child", "--propagation", "private",
         "/bin/bash", "-c", HOST_INIT, "fleet-init", str(hostdir), str(state_dir / "rootfs"),
         host["name"], host["address"], "rw" if host["group"] == "ksm_nodes" else "ro",
         host.get("python_dir") or ""],
        stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True,
        close_fds=True)
    logfile.close()
    host["pid"] = proc.pid
    host["init_pid"] = namespace_child(proc.pid)
    return proc


def wait_ssh(hosts, procs, timeout):
    """Wait until every host's sshd answers with its banner."""
    pending = {h["name"]: h for h in hosts}
    deadline = time.monotonic() + timeout
    while pending:
        for name, host in list(pending.items()):
            proc = procs.get(name)
            if proc is not None and proc.poll() is not None:
                console = pathlib.Path(host["console"]).read_text(errors="replace")[-2000:]
                raise RuntimeError("%s exited with %s during boot:\n%s" % (name, proc.returncode, console))
            try:
                with socket.create_connection((host["address"], 22), timeout=0.5) as sock:
                    if sock.recv(8).startswith(b"SSH-"):
                        del pending[name]
            except OSError:
                pass
        if pending:
            if time.monotonic() > deadline:
                raise RuntimeError("sshd did not answer on %s within %ss" % (
                    ", ".join(sorted(pending)), timeout))
            time.sleep(0.05)


# ---------------------------------------------------------------- rootfs
def export_rootfs(image, target, name):
    """Unpack the image's filesystem once; every host overlays it read-only."""
    target.mkdir(parents=True)
    cid = run(["podman", "create", "--name", name, image, "/bin/true"],
              capture_output=True, text=True).stdout.strip()
    try:
        # Classic pipeline: the parent drops its copy of the pipe at once, so that if tar dies
        # podman export gets SIGPIPE instead of blocking forever on a pipe nobody reads.
        export = subprocess.Popen(DIE_WITH_PARENT + ["podman", "export", cid], stdout=subprocess.PIPE)
        untar = subprocess.Popen(
            DIE_WITH_PARENT + ["tar", "-x", "-p", "--numeric-owner", "-C", str(target), "-f", "-"],
            stdin=export.stdout)
        export.stdout.close()
        if untar.wait() != 0 or export.wait(timeout=120) != 0:
            raise RuntimeError("podman export %s | tar -x failed" % image)
    finally:
        run(["podman", "rm", "-f", cid], capture_output=True, check=False)


def prepare_rootfs(rootfs, pubkey):
    """What every host shares: the login key, sshd host keys, the kernel config, mount points."""
    if not (rootfs / SSHD.lstrip("/")).exists():
        raise RuntimeError("the image has no %s: build it with tests/images/build.sh fleet" % SSHD)
    ssh = rootfs / "root" / ".ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text(pubkey)
    os.chmod(ssh / "authorized_keys", 0o600)
    if not list((rootfs / "etc" / "ssh").glob("ssh_host_*_key")):
        run(["ssh-keygen", "-A", "-f", str(rootfs)], capture_output=True)
    release = os.uname().release
    boot = rootfs / "boot"
    boot.mkdir(exist_ok=True)
    (boot / ("config-" + release)).write_text(
        "# Kernel configuration visible to the fleet hosts (the machine's kernel has KSM)\n"
        "CONFIG_MMU=y\nCONFIG_KSM=y\n")
    for mountpoint in ("proc", "sys", "dev", "run", "tmp"):
        (rootfs / mountpoint).mkdir(exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)


def create_host(state_dir, index, count, nodes, network, flavours=("debian",), pyenv_root=None):
    name = host_name(index)
    hostdir = state_dir / "hosts" / name
    for sub in ("upper", "work", "root", "ksm"):
        (hostdir / sub).mkdir(parents=True)
    (hostdir / "upper" / "etc").mkdir()
    (hostdir / "upper" / "etc" / "hostname").write_text(name + "\n")
    reset_fake_ksm(hostdir / "ksm")
    flavour = assign_flavours(index, count, nodes, list(flavours))
    python_dir = None
    if flavour != "debian":
        python_dir = pyenv_python_dir(pyenv_root, FLAVOUR_PYTHON[flavour][0])
    interpreter = make_flavour(hostdir / "upper", flavour, python_dir)
    return {
        "flavour": flavour,
        "python_dir": str(python_dir) if python_dir else None,
        "interpreter": interpreter or "/usr/bin/python3",
        "name": name,
        "index": index,
        "address": host_address(index, network),
        "group": "ksm_nodes" if is_node(index, count, nodes) else "ksm_containers",
        "ksm_dir": str(hostdir / "ksm"),
        "upper": str(hostdir / "upper"),
        "console": str(hostdir / "console.log"),
    }


# ---------------------------------------------------------------- commands
def address_in_use(address):
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((address, 22)) == 0


def cmd_up(args):
    state_dir = pathlib.Path(args.state).resolve()
    if not 1 <= args.count <= MAX_HOSTS:
        die("--count %d: expected 1 to %d" % (args.count, MAX_HOSTS))
    nodes = args.count // 2 if args.nodes is None else args.nodes
    if not 0 <= nodes <= args.count:
        die("--nodes %d: expected 0 to --count (%d)" % (nodes, args.count))
    if state_dir.exists() and any(state_dir.iterdir()):
        die("%s is not empty: run 'fleet.py down --state %s' first" % (state_dir, state_dir))
    addresses = [host_address(i, args.network) for i in range(1, args.count + 1)]
    busy = [address for address in addresses if address_in_use(address)]
    if busy:
        die("port 22 already answers on %s (another fleet?)" % ", ".join(busy))

    started = time.monotonic()
    state_dir.mkdir(parents=True, exist_ok=True)
    state = {"state_dir": str(state_dir), "image": args.rootfs_image, "count": args.count,
             "nodes": nodes, "network": args.network, "flavours": args.flavours, "key": str(state_dir / "id_ed25519"),
             "export_container": "%s-export-%d" % (PREFIX, os.getpid()), "hosts": []}
    save_state(state_dir, state)
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "samepage-fleet",
             "-f", state["key"]], capture_output=True)
        export_rootfs(args.rootfs_image, state_dir / "rootfs", state["export_container"])
        state["export_container"] = None  # removed by export_rootfs
        save_state(state_dir, state)
        prepare_rootfs(state_dir / "rootfs", (state_dir / "id_ed25519.pub").read_text())
        exported = time.monotonic()
        procs = {}
        for index in range(1, args.count + 1):
            host = create_host(state_dir, index, args.count, nodes, args.network, args.flavours,
                               args.pyenv_root)
            state["hosts"].append(host)
            procs[host["name"]] = start_host(state, host)
            save_state(state_dir, state)  # down can find every started host, even after a crash
        wait_ssh(state["hosts"], procs, args.timeout)
        write_inventory(state, state_dir / "inventory.yml")
    except BaseException as exc:
        log("up failed (%s): tearing down" % (exc or type(exc).__name__))
        teardown(state_dir)
        if isinstance(exc, KeyboardInterrupt):
            sys.exit(130)
        if isinstance(exc, (RuntimeError, subprocess.CalledProcessError, OSError)):
            die(str(exc))
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    done = time.monotonic()
    log("%d hosts up (%d ksm_nodes, %d ksm_containers) in %.1fs (rootfs %.1fs, boot %.1fs); "
        "inventory: %s" % (args.count, nodes, args.count - nodes, done - started,
                           exported - started, done - exported, state_dir / "inventory.yml"))
    return 0


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def teardown(state_dir):
    state = load_state(state_dir) if state_dir.exists() else None
    if state:
        kill_hosts(state_dir, state["hosts"])
        if state.get("export_container"):  # left behind only when up was killed while exporting
            run(["podman", "rm", "-f", "--ignore", state["export_container"]], capture_output=True,
                check=False)
    if state_dir.exists():
        leftovers = [line.split()[1] for line in pathlib.Path("/proc/self/mounts").read_text().splitlines()
                     if line.split()[1].startswith(str(state_dir) + "/")]
        if leftovers:  # never the case by design; refuse to delete below a live mount
            die("mounts still present under %s: %s" % (state_dir, ", ".join(leftovers)))
        shutil.rmtree(state_dir)


def cmd_down(args):
    state_dir = pathlib.Path(args.state).resolve()
    if state_dir.exists() and not (state_dir / STATE_FILE).exists() and any(state_dir.iterdir()):
        die("%s has no %s: not a fleet state dir, not removing it" % (state_dir, STATE_FILE))
    started = time.monotonic()
    teardown(state_dir)
    log("down in %.1fs" % (time.monotonic() - started))
    return 0


def inventory_text(state):
    """YAML inventory (written by hand: the harness needs no YAML library)."""
    groups = {"ksm_nodes": [], "ksm_containers": []}
    for host in state["hosts"]:
        groups[host["group"]].append(host)
    lines = [
        "# Generated by tests/fleet/fleet.py for the fleet in %s" % state["state_dir"],
        "all:",
        "  vars:",
        "    ansible_user: root",
        "    ansible_ssh_private_key_file: %s" % state["key"],
        "    ansible_ssh_common_args: >-",
        "      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        "    ansible_python_interpreter: /usr/bin/python3",
        "    samepage_fleet_state: %s" % state["state_dir"],
        "  children:",
    ]
    for group, hosts in groups.items():
        lines.append("    %s:" % group)
        if group == "ksm_nodes":
            lines += [
                "      vars:",
                "        # Fleet hosts have a private /proc: the kernel's ksmd thread is not visible.",
                "        ksm_node_verify_ksmd: false",
            ]
        lines.append("      hosts:" + ("" if hosts else " {}"))
        for host in hosts:
            lines += [
                "        %s:" % host["name"],
                "          ansible_host: %s" % host["address"],
                "          ansible_python_interpreter: %s" % host.get("interpreter", "/usr/bin/python3"),
                "          samepage_fleet_flavour: %s" % host.get("flavour", "debian"),
                "          samepage_fleet_ksm_dir: %s" % host["ksm_dir"],
                "          samepage_fleet_upper: %s" % host["upper"],
            ]
    return "\n".join(lines) + "\n"


def write_inventory(state, path):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(inventory_text(state))
    os.replace(tmp, path)


def require_state(args):
    state_dir = pathlib.Path(args.state).resolve()
    state = load_state(state_dir)
    if state is None:
        die("no fleet in %s (run 'fleet.py up --state %s' first)" % (state_dir, state_dir))
    return state_dir, state


def cmd_inventory(args):
    state_dir, state = require_state(args)
    text = inventory_text(state)
    if args.output:
        write_inventory(state, pathlib.Path(args.output))
    else:
        sys.stdout.write(text)
    return 0


def cmd_status(args):
    state_dir, state = require_state(args)
    down = 0
    print("%-9s %-15s %-15s %-7s %s" % ("HOST", "ADDRESS", "GROUP", "PID", "STATE"))
    for host in state["hosts"]:
        alive = bool(host.get("pid")) and ours(host["pid"], state_dir)
        ssh = alive and address_in_use(host["address"])
        down += not ssh
        print("%-9s %-15s %-15s %-7s %s" % (host["name"], host["address"], host["group"],
                                            host.get("pid", "-"), "up" if ssh else "DOWN"))
    print("%d/%d hosts up, state %s" % (len(state["hosts"]) - down, len(state["hosts"]), state_dir))
    return 1 if down else 0


def cmd_reboot(args):
    """Power-cycle hosts: kill, reset the fake KSM sysfs to boot values, boot (rc.local, sshd)."""
    state_dir, state = require_state(args)
    names = set(args.hosts) or {h["name"] for h in state["hosts"]}
    unknown = names - {h["name"] for h in state["hosts"]}
    if unknown:
        die("unknown host(s): %s" % ", ".join(sorted(unknown)))
    hosts = [h for h in state["hosts"] if h["name"] in names]
    started = time.monotonic()
    kill_hosts(state_dir, hosts)
    procs = {}
    for host in hosts:
        hostdir = state_dir / "hosts" / host["name"]
        shutil.rmtree(hostdir / "work")  # overlayfs wants an empty work dir after an unclean stop
        (hostdir / "work").mkdir()
        reset_fake_ksm(hostdir / "ksm")
        procs[host["name"]] = start_host(state, host)
        save_state(state_dir, state)
    try:
        wait_ssh(hosts, procs, args.timeout)
    except RuntimeError as exc:
        die(str(exc))
    log("rebooted %d host(s) in %.1fs" % (len(hosts), time.monotonic() - started))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start N hosts")
    up.add_argument("--count", type=int, default=20)
    up.add_argument("--nodes", type=int, help="how many are ksm_nodes (default: half); the rest "
                                              "are ksm_containers")
    up.add_argument("--rootfs-image", default=DEFAULT_IMAGE)
    up.add_argument("--state", default=DEFAULT_STATE)
    up.add_argument("--network", type=loopback_network, default=DEFAULT_NETWORK,
                    help="hosts listen on <network>.11, .12, ... (default %(default)s); another "
                         "loopback network lets two fleets run side by side")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for every sshd")
    up.add_argument("--flavours", type=flavour_list, default=["debian"],
                    help="host flavours cycled over the nodes and the containers: debian, el7 (Python 2.7 "
                         "only, EL rc.local symlink; nodes only), el8 (Python 3.6) (default: debian)")
    up.add_argument("--pyenv-root", default=os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv"),
                    help="where the EL flavours' Pythons come from (default: $PYENV_ROOT or ~/.pyenv)")
    down = sub.add_parser("down", help="stop every host and remove the state dir")
    down.add_argument("--state", default=DEFAULT_STATE)
    inv = sub.add_parser("inventory", help="print (or --output) the YAML inventory")
    inv.add_argument("--state", default=DEFAULT_STATE)
    inv.add_argument("--output")
    status = sub.add_parser("status", help="which hosts answer on SSH")
    status.add_argument("--state", default=DEFAULT_STATE)
    reboot = sub.add_parser("reboot", help="power-cycle hosts (all by default)")
    reboot.add_argument("--state", default=DEFAULT_STATE)
    reboot.add_argument("--timeout", type=float, default=60.0)
    reboot.add_argument("hosts", nargs="*")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        die("needs root (namespaces, overlayfs, mounts)")
    return {"up": cmd_up, "down": cmd_down, "inventory": cmd_inventory, "status": cmd_status,
            "reboot": cmd_reboot}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
