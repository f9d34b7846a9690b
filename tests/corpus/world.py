"""Build the corpus "world": the files of every fetched package, as if all were installed, with each
daemon binary replaced by a probe. It is laid over this machine's / in the sandbox (sandbox.sh).

- Package trees (.cache/corpus/root/<pkg>_<version>/) are hard-linked in (merged /usr: bin, sbin and
  lib go under usr/), first package wins on a clash. Hard links are never written through: a file
  that changes is unlinked first, so the cache stays as dpkg-deb extracted it.
- Probes: every ELF executable of the packages and every literal DAEMON=/path of an init script
  becomes a small shell script that records what the process that was exec'd got: its environment,
  its ksm_stat (ksm_merge_any) and its memory maps (was the preloaded library really loaded?).
- The preload library is the project's fixture (tests/fixtures/ksm_preload/ksm_preload.c, a
  constructor calling prctl(PR_SET_MEMORY_MERGE)), compiled to /usr/lib64/libksm_preload.so, the
  module's default; the launcher is the container role's samepage-ksm-merge.
- Users and groups named by the scripts (--chuid/-c/-u user[:group], USER=...) are added to copies of
  this machine's passwd/group so that start-stop-daemon can switch to them.
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "build", "collections"))

from ansible_collections.samepage.ksm.plugins.module_utils import _ld_preload as lp  # noqa: E402

LIBRARY = "/usr/lib64/libksm_preload.so"
LAUNCHER = "/usr/local/sbin/samepage-ksm-merge"
PROBE_MARK = "samepage corpus probe"
PROBE = """#!/bin/sh
# %s: records what the process that the start path exec'd got, then exits 0.
d=/run/corpus-probe
[ -d "$d" ] || exit 0
f="$d/$$"
cat /proc/$$/environ > "$f.environ" 2>/dev/null
cat /proc/$$/ksm_stat > "$f.ksm" 2>/dev/null
cat /proc/$$/maps > "$f.maps" 2>/dev/null
printf '%%s\\n' "$0" "$*" > "$f.exe"
# Pre-flight checks of init scripts read a version or usage line (ssh: sshd -? | grep OpenSSH).
case "$1" in
    -\\?|-V|-v|--version|-h|--help|-version) echo "${0##*/} 0.0 (samepage corpus probe; OpenSSH_0 compatible)" >&2 ;;
esac
exit 0
""" % PROBE_MARK
MERGED = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
BUILDER_VERSION = "5"
_USER = re.compile(r"""(?:--chuid|\s-c|\s-u|--user)[ =]+["']?([a-z_][a-z0-9_-]*)(?::([a-z_][a-z0-9_-]*))?["']?(?=[\s;]|$)""")
_USER_VAR = re.compile(r"""^\s*(?:[A-Z_]*USER|USERID|DAEMONUSER|RUN_AS)=["']?([a-z_][a-z0-9_-]*)["']?\s*$""", re.M)
_GROUP_VAR = re.compile(r"""^\s*(?:[A-Z_]*GROUP|GROUPID)=["']?([a-z_][a-z0-9_-]*)["']?\s*$""", re.M)


def manifest(cache):
    rows = []
    with open(os.path.join(cache, "manifest.tsv")) as handle:
        for line in handle:
            package, version, deb, directory = line.rstrip("\n").split("\t")
            rows.append(dict(package=package, version=version, deb=deb, dir=directory))
    return rows


def world_key(rows):
    digest = hashlib.sha256()
    digest.update(BUILDER_VERSION.encode())
    for row in rows:
        digest.update(("%s %s\n" % (row["package"], row["version"])).encode())
    for path in (os.path.abspath(__file__), os.path.join(ROOT, "tests/fixtures/ksm_preload/ksm_preload.c"),
                 os.path.join(ROOT, "roles/container/files/samepage-ksm-merge")):
        with open(path, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def _target(rel):
    head = rel.split(os.sep, 1)
    if head[0] in MERGED:
        return os.path.join(MERGED[head[0]], *head[1:])
    return rel


def link_tree(src, world, owner):
    for directory, dirs, files in os.walk(src):
        rel_dir = os.path.relpath(directory, src)
        for name in dirs + files:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel == ".extracted":
                continue
            source = os.path.join(src, rel)
            dest = os.path.join(world, _target(rel))
            if os.path.lexists(dest):
                continue
            if os.path.islink(source):
                os.symlink(os.readlink(source), dest)
                owner[_target(rel)] = src
            elif os.path.isdir(source):
                os.makedirs(dest)
            else:
                os.link(source, dest)
                owner[_target(rel)] = src


def is_elf_executable(path):
    if os.path.islink(path) or not os.path.isfile(path) or not os.access(path, os.X_OK):
        return False
    if ".so" in os.path.basename(path):
        return False
    with open(path, "rb") as handle:
        head = handle.read(18)
    # ELF, e_type 2 (EXEC) or 3 (DYN: PIE executables; shared objects are excluded by name above)
    return head[:4] == b"\x7fELF" and head[16] in (2, 3)


def put(world, rel, text, mode):
    dest = os.path.join(world, rel.lstrip("/"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.lexists(dest):
        os.unlink(dest)   # never write through a hard link into the cache
    with open(dest, "w" if isinstance(text, str) else "wb") as handle:
        handle.write(text)
    os.chmod(dest, mode)


def daemon_paths(script_text):
    values = lp.simple_assignments(script_text)
    found = []
    for match in re.finditer(r"""^\s*DAEMON=["']?([^"'\s;#]+)""", script_text, re.M):
        path = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: values.get(m.group(1), m.group(0)), match.group(1))
        if path.startswith("/") and "$" not in path:
            found.append(os.path.normpath(path))
    return found


# System users the packages' maintainer scripts would create (start-stop-daemon --chuid needs them).
SYSTEM_USERS = ("beanstalkd", "bind", "clamav", "Debian-exim", "dnsmasq", "dovecot", "dovenull", "memcache",
                "mosquitto", "mysql", "nagios", "opendkim", "postfix", "prosody", "redis", "stunnel4", "tftp",
                "_chrony", "nslcd", "nut", "ntpsec", "snmp", "debian-tor", "privoxy", "squid", "zabbix",
                "Debian-snmp", "_lldpd", "munin", "saned", "varnish", "vcache", "uwsgi", "ftp", "proftpd",
                "minidlna", "icecast2", "gearman", "postgres", "avahi", "messagebus", "_rpc", "statd", "ejabberd")


def accounts(scripts):
    users, groups = set(SYSTEM_USERS), set(SYSTEM_USERS)
    for text in scripts:
        for match in _USER.finditer(text):
            users.add(match.group(1))
            if match.group(2):
                groups.add(match.group(2))
        users.update(_USER_VAR.findall(text))
        groups.update(_GROUP_VAR.findall(text))
    return sorted(users - {"root"}), sorted(groups - {"root"})


def add_accounts(world, users, groups):
    with open("/etc/passwd") as handle:
        passwd = handle.read()
    with open("/etc/group") as handle:
        group = handle.read()
    known_users = {line.split(":")[0] for line in passwd.splitlines()}
    known_groups = {line.split(":")[0] for line in group.splitlines()}
    number = 61000
    for name in sorted(set(groups) | set(users)):
        if name not in known_groups:
            group += "%s:x:%d:\n" % (name, number)
            known_groups.add(name)
            number += 1
    gids = {line.split(":")[0]: line.split(":")[2] for line in group.splitlines() if line.count(":") >= 2}
    number = 61000
    for name in users:
        if name not in known_users:
            passwd += "%s:x:%d:%s::/nonexistent:/usr/sbin/nologin\n" % (name, number, gids.get(name, "65534"))
            number += 1
    put(world, "etc/passwd", passwd, 0o644)
    put(world, "etc/group", group, 0o644)


def build(cache, log=print):
    """The world directory for the fetched packages (built once per package set and builder)."""
    rows = manifest(cache)
    key = world_key(rows)
    world = os.path.join(cache, "world-" + key)
    if os.path.exists(os.path.join(world, ".complete")):
        return world, rows
    for stale in os.listdir(cache):
        if stale.startswith("world-"):
            shutil.rmtree(os.path.join(cache, stale))
    os.makedirs(world)
    owner = {}
    for row in rows:
        link_tree(row["dir"], world, owner)
    scripts = {}
    init_d = os.path.join(world, "etc", "init.d")
    for name in sorted(os.listdir(init_d)):
        with open(os.path.join(init_d, name), "rb") as handle:
            scripts[name] = handle.read().decode("latin-1")
    probes = 0
    for top in ("usr/bin", "usr/sbin", "usr/lib", "usr/libexec", "usr/games"):
        base = os.path.join(world, top)
        for directory, dirs, files in os.walk(base):
            for name in files:
                path = os.path.join(directory, name)
                if is_elf_executable(path):
                    put(world, os.path.relpath(path, world), PROBE, 0o755)
                    probes += 1
    for text in scripts.values():
        for path in daemon_paths(text):
            dest = os.path.join(world, path.lstrip("/"))
            if not (os.path.isfile(dest) and PROBE_MARK in open(dest, encoding="latin-1").read(200)):
                put(world, path, PROBE, 0o755)
                probes += 1
    source = os.path.join(ROOT, "tests/fixtures/ksm_preload/ksm_preload.c")
    library = os.path.join(world, LIBRARY.lstrip("/"))
    os.makedirs(os.path.dirname(library), exist_ok=True)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", library, source], check=True)
    with open(os.path.join(ROOT, "roles/container/files/samepage-ksm-merge")) as handle:
        # as the container role installs it: the target's own Python in the shebang
        put(world, LAUNCHER, "#!/usr/bin/python3\n" + handle.read().split("\n", 1)[1], 0o755)
    users, groups = accounts(scripts.values())
    add_accounts(world, users, groups)
    with open(os.path.join(world, ".complete"), "w") as handle:
        handle.write("%d probes, %d users\n" % (probes, len(users)))
    log("corpus world %s: %d packages, %d init scripts, %d probes, users %s" % (
        key, len(rows), len(scripts), probes, " ".join(users)))
    return world, rows
