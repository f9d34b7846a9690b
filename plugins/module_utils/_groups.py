# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which container, unit or slice a process belongs to, from /proc/PID/cgroup; KSM use per group.

Private to the collection (leading underscore). Runs on the managed host: Python 2.7 / 3.6 clean.
Nothing here writes anything, runs a command or talks to a container engine: names come from the
engines' own state files, best effort.

A group is ``{kind, id, name, runtime}``:
  kind     container | unit | slice | lxc | openvz | host
  id       container ID (full hex), unit or slice name, LXC name, CT ID, or the cgroup path (host)
  name     the container's name where its engine's state file says it, else None
  runtime  podman | docker | containerd | lxc | openvz | systemd | None
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import re

from ansible_collections.samepage.ksm.plugins.module_utils._ksm_info import _read_text, pid_dirs

# Most specific first. Each pattern sees one path component.
_CONTAINER_COMPONENTS = (
    (re.compile(r'\Alibpod-(?!conmon-)([0-9a-f]{12,64})(?:\.scope)?\Z'), 'podman'),
    (re.compile(r'\Adocker-([0-9a-f]{12,64})\.scope\Z'), 'docker'),
    (re.compile(r'\Acri-containerd-([0-9a-f]{12,64})\.scope\Z'), 'containerd'),
    (re.compile(r'\Acrio-([0-9a-f]{12,64})\.scope\Z'), None),
)
_LXC_COMPONENT = re.compile(r'\Alxc\.payload[.:](.+)\Z')
_UNIT_SUFFIXES = ('.service', '.scope', '.socket', '.mount', '.swap', '.target', '.timer', '.device')
_HEX_ID = re.compile(r'\A[0-9a-f]{64}\Z')
# OpenVZ 6 CT IDs are numbers; Virtuozzo 7 also uses UUIDs.
_CTID = re.compile(r'\A(?:[0-9]+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\Z')
_OPENVZ_CONTROLLERS = ('ve', 'beancounter')

PODMAN_STATE_FILES = (
    '/var/lib/containers/storage/overlay-containers/containers.json',
    '/run/containers/storage/overlay-containers/containers.json',
)
DOCKER_CONTAINERS_DIR = '/var/lib/docker/containers'
CONTAINERD_TASK_DIRS = ('/run/containerd/io.containerd.runtime.v2.task',)


def parse_cgroup(text):
    """/proc/PID/cgroup lines -> list of (controllers tuple, path); v2's '0::/p' gives ((), path)."""
    entries = []
    for line in text.splitlines():
        parts = line.split(':', 2)
        if len(parts) != 3:
            continue
        controllers = tuple(c for c in parts[1].split(',') if c)
        entries.append((controllers, parts[2].strip() or '/'))
    return entries


def _ordered_paths(entries):
    """Paths in the order they are trusted: v2, then systemd's v1 tree, memory, then the rest."""
    def rank(entry):
        controllers = entry[0]
        if not controllers:
            return 0
        if 'name=systemd' in controllers:
            return 1
        if 'memory' in controllers:
            return 2
        return 3
    return [path for _controllers, path in sorted(entries, key=rank)]


def _container_in(path):
    """(kind, id, runtime) of the innermost container named in one cgroup path, or None."""
    components = [c for c in path.split('/') if c]
    found = None
    for index, component in enumerate(components):
        for pattern, runtime in _CONTAINER_COMPONENTS:
            match = pattern.match(component)
            if match:
                found = ('container', match.group(1), runtime)
                break
        else:
            lxc = _LXC_COMPONENT.match(component)
            if lxc:
                found = ('lxc', lxc.group(1), 'lxc')
            elif component == 'lxc' and index + 1 < len(components):
                found = ('lxc', components[index + 1], 'lxc')
            elif component == 'docker' and index + 1 < len(components) and _HEX_ID.match(components[index + 1]):
                found = ('container', components[index + 1], 'docker')
            elif component.startswith('kubepods') and index + 2 < len(components) \
                    and _HEX_ID.match(components[-1]):
                # kubelet with the cgroupfs driver: /kubepods/<qos>/pod<uid>/<container id>
                found = ('container', components[-1], None)
    return found


def _unit_in(path):
    """(kind, name) of the innermost systemd unit or slice in a cgroup path, or None."""
    components = [c for c in path.split('/') if c]
    for component in reversed(components):
        if component.endswith(_UNIT_SUFFIXES):
            return 'unit', component
    for component in reversed(components):
        if component.endswith('.slice'):
            return 'slice', component
    return None


def classify(entries):
    """The group of a process from its parsed /proc/PID/cgroup (see parse_cgroup)."""
    for controllers, path in entries:
        if set(controllers) & set(_OPENVZ_CONTROLLERS):
            first = [c for c in path.split('/') if c][:1]
            if first and _CTID.match(first[0]) and first[0] != '0':
                return {'kind': 'openvz', 'id': first[0], 'name': None, 'runtime': 'openvz'}
    paths = _ordered_paths(entries)
    for path in paths:
        found = _container_in(path)
        if found:
            kind, ident, runtime = found
            return {'kind': kind, 'id': ident, 'name': ident if kind == 'lxc' else None, 'runtime': runtime}
    for path in paths:
        unit = _unit_in(path)
        if unit:
            return {'kind': unit[0], 'id': unit[1], 'name': unit[1], 'runtime': 'systemd'}
    return {'kind': 'host', 'id': paths[0] if paths else '/', 'name': None, 'runtime': None}


def process_group(proc_path, pid):
    """The group of one process; raises IOError/OSError when its cgroup file cannot be read."""
    return classify(parse_cgroup(_read_text(os.path.join(proc_path, str(pid), 'cgroup'))))


def _load_json(path):
    try:
        with open(path, 'rb') as handle:
            return json.loads(handle.read().decode('utf-8', 'replace'))
    except (IOError, OSError, ValueError):
        return None


class NameResolver:
    """Container names from the engines' state files, each read at most once (best effort)."""

    def __init__(self, root='/'):
        self.root = root
        self._podman = None

    def _path(self, path):
        return os.path.join(self.root, path.lstrip('/'))

    def _podman_names(self):
        if self._podman is None:
            self._podman = {}
            for state in PODMAN_STATE_FILES:
                data = _load_json(self._path(state))
                for item in data if isinstance(data, list) else []:
                    if isinstance(item, dict) and item.get('id') and item.get('names'):
                        self._podman.setdefault(item['id'], item['names'][0])
        return self._podman

    def _docker_name(self, ident):
        data = _load_json(os.path.join(self._path(DOCKER_CONTAINERS_DIR), ident, 'config.v2.json'))
        if isinstance(data, dict) and data.get('Name'):
            return data['Name'].lstrip('/')
        return None

    def _containerd_name(self, ident):
        for base in CONTAINERD_TASK_DIRS:
            base = self._path(base)
            try:
                namespaces = os.listdir(base)
            except (IOError, OSError):
                continue
            for namespace in namespaces:
                data = _load_json(os.path.join(base, namespace, ident, 'config.json'))
                if not isinstance(data, dict):
                    continue
                notes = data.get('annotations') or {}
                name = notes.get('io.kubernetes.cri.container-name')
                pod = notes.get('io.kubernetes.cri.sandbox-name')
                if name and pod:
                    return '%s/%s' % (pod, name)
                return name or pod or None
        return None

    def name(self, group):
        """The container's name, or None when no state file says it."""
        if group['kind'] != 'container':
            return group.get('name')
        ident = group['id']
        if group['runtime'] == 'podman':
            names = self._podman_names()
            if ident in names:
                return names[ident]
            # A short ID in the cgroup path: match the stored full IDs by prefix.
            for full, name in names.items():
                if full.startswith(ident):
                    return name
            return None
        if group['runtime'] == 'docker':
            return self._docker_name(ident)
        if group['runtime'] == 'containerd':
            return self._containerd_name(ident)
        return None


def group_key(group):
    return (group['kind'], group['id'])


def _read_ksm_stat(proc_path, pid):
    """(merging_pages, profit_bytes or None) of one process, or None when it takes no part."""
    base = os.path.join(proc_path, str(pid))
    stat_path = os.path.join(base, 'ksm_stat')
    if os.path.exists(stat_path):
        merging, profit, zero = 0, None, 0
        for line in _read_text(stat_path).splitlines():
            parts = line.replace(':', ' ').split()
            if len(parts) != 2:
                continue
            if parts[0] == 'ksm_merging_pages' and parts[1].isdigit():
                merging = int(parts[1])
            elif parts[0] == 'ksm_zero_pages' and parts[1].isdigit():
                zero = int(parts[1])
            elif parts[0] == 'ksm_process_profit':
                try:
                    profit = int(parts[1])
                except ValueError:
                    profit = None
        if not (merging or zero):
            return None
        return merging, profit
    merging_path = os.path.join(base, 'ksm_merging_pages')
    if not os.path.exists(merging_path):
        return None
    merging = int(_read_text(merging_path).strip() or 0)
    return (merging, None) if merging else None


def _sort_key(entry, page_size):
    profit = entry['profit_bytes']
    if profit is None:
        profit = entry['merging_pages'] * page_size
    return (-profit, -entry['merging_pages'], entry['kind'], entry['id'])


def top_groups(proc_path, limit, page_size, root='/'):
    """(top ``limit`` groups by KSM profit, number of processes whose statistics were unreadable).

    Each group: {kind, id, name, runtime, processes, merging_pages, profit_bytes}; processes counts
    the group's processes that take part in KSM. profit_bytes is None when the kernel has no
    ksm_process_profit (before 6.1) for any of them.
    """
    if limit <= 0:
        return [], 0
    groups = {}
    denied = 0
    for pid in pid_dirs(proc_path):
        try:
            usage = _read_ksm_stat(proc_path, pid)
            if usage is None:
                continue
            group = process_group(proc_path, pid)
        except (IOError, OSError) as exc:
            # A process that ended while we looked is no news; a permission error is.
            if getattr(exc, 'errno', None) in (errno.EACCES, errno.EPERM):
                denied += 1
            continue
        except ValueError:
            continue
        merging, profit = usage
        entry = groups.get(group_key(group))
        if entry is None:
            entry = dict(group, processes=0, merging_pages=0, profit_bytes=None)
            groups[group_key(group)] = entry
        entry['processes'] += 1
        entry['merging_pages'] += merging
        if profit is not None:
            entry['profit_bytes'] = (entry['profit_bytes'] or 0) + profit
    ranked = sorted(groups.values(), key=lambda e: _sort_key(e, page_size))[:limit]
    names = NameResolver(root)
    for entry in ranked:
        entry['name'] = names.name(entry)
    return ranked, denied
