# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Read-only checks of a KSM node, used by ksm_sysfs (preflight) and ksm_info (report): competing
KSM controllers, the init system, our systemd units.

Private to the collection (leading underscore). Runs on the managed host: Python 2.7 / 3.6 clean.
Every function reads; none writes. Paths are joined below ``root`` so tests can use a fake tree.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os

from ansible_collections.samepage.ksm.plugins.module_utils._ksm import DEFAULT_SYSFS_PATH as KSM_SYSFS, RUN
from ansible_collections.samepage.ksm.plugins.module_utils._ksm_info import pid_dirs
from ansible_collections.samepage.ksm.plugins.module_utils._persist import (
    BEGIN, END, RELAX_SERVICE, RELAX_TIMER, SERVICE)

COMPETING_SERVICES = ('ksmtuned', 'ksm')
OUR_UNITS = (SERVICE, RELAX_SERVICE, RELAX_TIMER)
COMPETING_KINDS = ('service', 'process', 'tuned', 'rc_local')
TUNED_DIRS = ('/etc/tuned/%s', '/usr/lib/tuned/%s', '/etc/tuned/profiles/%s', '/usr/lib/tuned/profiles/%s')
SYSV_RUNLEVELS = ('rc2.d', 'rc3.d', 'rc5.d')


def _under(root, path):
    return os.path.join(root, path.lstrip('/')) if root not in ('', '/') else path


def _read(path):
    try:
        with open(path, 'rb') as handle:
            return handle.read().decode('utf-8', 'replace')
    except (IOError, OSError):
        return None


def parse_systemctl_show(text):
    """Blocks of KEY=VALUE lines separated by blank lines (systemctl show UNIT...), in order."""
    blocks, current = [], {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition('=')
        if sep:
            current[key] = value
    if current:
        blocks.append(current)
    return blocks


def unit_states(systemctl, units):
    """{unit: (UnitFileState, ActiveState)} from one `systemctl show` call.

    ``systemctl`` is a callable taking an argv list and returning (rc, stdout, stderr)."""
    rc, out, err = systemctl(['show', '--property=Id,UnitFileState,ActiveState', '--'] + list(units))
    if rc != 0:
        raise OSError('systemctl show failed (rc %d): %s' % (rc, (err or out).strip()))
    states = {}
    for block in parse_systemctl_show(out):
        unit = block.get('Id')
        if unit:
            states[unit] = (block.get('UnitFileState', ''), block.get('ActiveState', ''))
    return states


def process_running(proc_path, comm):
    for pid in pid_dirs(proc_path):
        text = _read(os.path.join(proc_path, str(pid), 'comm'))
        if text is not None and text.strip() == comm:
            return True
    return False


def foreign_rc_local_lines(text, sysfs_path):
    """Line numbers of rc.local lines outside our block that write KSM knobs (not comments)."""
    lines, inside = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line == BEGIN:
            inside = True
            continue
        if line == END:
            inside = False
            continue
        if inside or line.lstrip().startswith('#'):
            continue
        if KSM_SYSFS in line or (sysfs_path and sysfs_path in line):
            lines.append(number)
    return lines


def tuned_profiles_writing_ksm(root):
    """(profile, conf) for every active tuned profile whose tuned.conf writes the KSM sysfs."""
    active = _read(_under(root, '/etc/tuned/active_profile'))
    found = []
    for profile in (active or '').split():
        for pattern in TUNED_DIRS:
            conf = _under(root, (pattern % profile) + '/tuned.conf')
            text = _read(conf)
            if text is None:
                continue
            if any(KSM_SYSFS in line for line in text.splitlines()
                   if not line.lstrip().startswith(('#', ';'))):
                found.append((profile, pattern % profile + '/tuned.conf'))
                break
    return found


def probe(sysfs_path, rc_local_path, systemctl=None, root='/', proc_path='/proc', competing=True):
    """What a KSM node looks like before anything is written to it, in one read-only pass.

    ``systemctl``: callable(argv) -> (rc, out, err), or None when systemctl is not installed.
    ``competing``: also look for other KSM controllers (else only the init system and our units)."""
    node = {
        # access(2) reports EROFS for a read-only /sys (unprivileged container), even for root.
        'sysfs_writable': os.access(os.path.join(sysfs_path, RUN), os.W_OK),
        'systemd': bool(systemctl) and os.path.isdir(_under(root, '/run/systemd/system')),
        'competing': [],
        'enabled_units': [],
        'active_units': [],
    }
    found = node['competing']

    def add(kind, name, detail):
        found.append({'kind': kind, 'name': name, 'detail': detail})

    if node['systemd']:
        wanted = (['%s.service' % name for name in COMPETING_SERVICES] if competing else []) + list(OUR_UNITS)
        states = unit_states(systemctl, wanted)
        for name in COMPETING_SERVICES if competing else ():
            enabled, active = states.get('%s.service' % name, ('', ''))
            if enabled.startswith('enabled') or active in ('active', 'activating'):
                add('service', name, 'systemd unit %s.service is %s, %s' % (name, enabled or 'not installed', active))
        node['enabled_units'] = [unit for unit in OUR_UNITS if states.get(unit, ('', ''))[0] == 'enabled']
        node['active_units'] = [unit for unit in OUR_UNITS
                                if states.get(unit, ('', ''))[1] in ('active', 'activating', 'reloading')]
    if not competing:
        return node
    if not node['systemd']:
        for name in COMPETING_SERVICES:
            script = _under(root, '/etc/init.d/%s' % name)
            if not os.access(script, os.X_OK):
                continue
            links = sorted(link for level in SYSV_RUNLEVELS
                           for link in glob.glob(_under(root, '/etc/%s/S*%s' % (level, name))))
            if links:
                add('service', name, 'init script /etc/init.d/%s starts at boot (%s)' % (name, ' '.join(links)))

    if not any(item['name'] == 'ksmtuned' for item in found) and process_running(proc_path, 'ksmtuned'):
        add('process', 'ksmtuned', 'a ksmtuned process is running')

    for profile, conf in tuned_profiles_writing_ksm(root):
        add('tuned', profile, 'active tuned profile %s writes %s (%s)' % (profile, KSM_SYSFS, conf))

    text = _read(rc_local_path)
    if text is not None:
        lines = foreign_rc_local_lines(text, sysfs_path)
        if lines:
            add('rc_local', rc_local_path, '%s writes KSM knobs outside the samepage.ksm block (line %s)'
                % (rc_local_path, ','.join(str(number) for number in lines)))
    return node


def competing_blockers(competing, allow):
    """The competing controllers that fail the run: all of them but the allowed kinds."""
    return [item for item in competing if item['kind'] not in allow]
