# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Read-only KSM state: sysfs knobs and counters, savings, kernel support, ksmd, per-process use.

Private to the collection (leading underscore). Runs on the managed host: Python 2.7 / 3.6 clean.
Nothing here writes anything.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import gzip
import os
import platform
import socket
import time

from ansible_collections.samepage.ksm.plugins.module_utils._ksm import (
    DEFAULT_SYSFS_PATH,
    KNOB_NAMES,
    read_all,
    read_knob,
)

MIB = 1024 * 1024
PF_KTHREAD = 0x00200000
CONFIG_OPTION = 'CONFIG_KSM'


def default_kernel_config_paths(release=None):
    """Where the running kernel's build configuration usually is: /boot first, then /proc."""
    release = release or platform.release()
    return ['/boot/config-%s' % release, '/proc/config.gz']


def page_size():
    try:
        return os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
        return 4096


def clock_ticks():
    try:
        return os.sysconf('SC_CLK_TCK')
    except (ValueError, OSError, AttributeError):
        return 100


def _to_mib(value):
    if value is None:
        return None
    return round(value / MIB, 2)


def _ratio(numerator, divisor):
    """numerator / divisor, or None when either is missing or the divisor is 0."""
    if numerator is None or not divisor:
        return None
    return round(numerator / divisor, 4)


def _read_text(path):
    with open(path, 'rb') as handle:
        data = handle.read()
    return data.decode('utf-8', 'replace')


def kernel_config(paths):
    """(value of CONFIG_KSM or None, path it came from or None, notes on paths that failed).

    A readable config without a CONFIG_KSM=... line means the option is off ('n'), as in
    ``# CONFIG_KSM is not set``. Gzip files are recognised by their magic bytes.
    """
    notes = []
    for path in paths:
        if not os.path.isfile(path):
            continue
        try:
            with open(path, 'rb') as handle:
                magic = handle.read(2)
            if magic == b'\x1f\x8b':
                with gzip.open(path, 'rb') as handle:
                    text = handle.read().decode('utf-8', 'replace')
            else:
                text = _read_text(path)
        except (IOError, OSError, EOFError, ValueError) as exc:
            notes.append('%s: %s' % (path, exc))
            continue
        value = 'n'
        for line in text.splitlines():
            line = line.strip()
            if line.startswith(CONFIG_OPTION + '='):
                value = line.split('=', 1)[1].strip().strip('"') or 'n'
                break
        return value, path, notes
    return None, None, notes


def pid_dirs(proc_path):
    """The PIDs under proc_path, sorted (none when it cannot be listed)."""
    try:
        names = os.listdir(proc_path)
    except (IOError, OSError):
        return []
    return sorted(int(name) for name in names if name.isdigit())


def parse_stat(text):
    """Fields of /proc/PID/stat: comm (which may hold spaces or parentheses) and the rest."""
    start = text.index('(')
    end = text.rindex(')')
    comm = text[start + 1:end]
    rest = text[end + 1:].split()
    # rest[0] is field 3 (state); flags is field 9, utime 14, stime 15.
    return {
        'comm': comm,
        'state': rest[0],
        'ppid': int(rest[1]),
        'flags': int(rest[6]),
        'utime': int(rest[11]),
        'stime': int(rest[12]),
    }


def find_ksmd(proc_path, ticks=None):
    """The ksmd kernel thread: {running, pid, cpu_seconds} (pid/cpu None when not found)."""
    ticks = ticks or clock_ticks()
    for pid in pid_dirs(proc_path):
        base = os.path.join(proc_path, str(pid))
        try:
            comm = _read_text(os.path.join(base, 'comm')).strip()
            if comm != 'ksmd':
                continue
            stat = parse_stat(_read_text(os.path.join(base, 'stat')))
        except (IOError, OSError, ValueError, IndexError):
            continue
        # A user process may call itself ksmd; only the kernel thread counts.
        if not stat['flags'] & PF_KTHREAD:
            continue
        return {
            'running': stat['state'] not in ('Z', 'X', 'x'),
            'pid': pid,
            'cpu_seconds': round((stat['utime'] + stat['stime']) / ticks, 2),
        }
    return {'running': False, 'pid': None, 'cpu_seconds': None}


def parse_ksm_stat(text):
    """/proc/PID/ksm_stat: 'name value' lines, and 'name: yes|no' for the two flags."""
    values = {}
    for line in text.splitlines():
        parts = line.replace(':', ' ').split()
        if len(parts) != 2:
            continue
        name, raw = parts
        if name in ('ksm_merge_any', 'ksm_mergeable'):
            # the kernel prints exactly "yes" or "no" here
            values[name] = {'yes': True, 'no': False}.get(raw)
        else:
            try:
                values[name] = int(raw)
            except ValueError:
                continue
    return values


def process_usage(proc_path, pid):
    """KSM use of one process, or None when it takes no part. Raises IOError/OSError if unreadable."""
    base = os.path.join(proc_path, str(pid))
    stat_path = os.path.join(base, 'ksm_stat')
    if os.path.exists(stat_path):
        stat = parse_ksm_stat(_read_text(stat_path))
        merging = stat.get('ksm_merging_pages', 0)
        if not (merging or stat.get('ksm_rmap_items') or stat.get('ksm_zero_pages')):
            return None
        profit = stat.get('ksm_process_profit')
        merge_any = stat.get('ksm_merge_any')
        mergeable = stat.get('ksm_mergeable')
    else:
        # Kernels before 6.1 only have ksm_merging_pages: no profit, no flags.
        merging_path = os.path.join(base, 'ksm_merging_pages')
        if not os.path.exists(merging_path):
            return None
        merging = int(_read_text(merging_path).strip() or 0)
        if not merging:
            return None
        profit, merge_any, mergeable = None, None, None
    try:
        comm = _read_text(os.path.join(base, 'comm')).strip()
    except (IOError, OSError):
        comm = None
    return {
        'pid': pid,
        'comm': comm,
        'merging_pages': merging,
        'profit_bytes': profit,
        'merge_any': merge_any,
        'mergeable': mergeable,
    }


def _profit_key(entry, size):
    profit = entry['profit_bytes']
    if profit is None:
        profit = entry['merging_pages'] * size
    return (-profit, -entry['merging_pages'], entry['pid'])


def top_processes(proc_path, limit, size):
    """(top ``limit`` processes by KSM profit, number of processes whose KSM stats were unreadable)."""
    if limit <= 0:
        return [], 0
    found = []
    denied = 0
    for pid in pid_dirs(proc_path):
        try:
            entry = process_usage(proc_path, pid)
        except (IOError, OSError) as exc:
            # A process that ended while we looked is no news; a permission error is.
            if getattr(exc, 'errno', None) in (errno.EACCES, errno.EPERM):
                denied += 1
            continue
        except ValueError:
            continue
        if entry is not None:
            found.append(entry)
    found.sort(key=lambda e: _profit_key(e, size))
    return found[:limit], denied


def _clock():
    return time.monotonic() if hasattr(time, 'monotonic') else time.time()


def wait_for_full_scans(sysfs_path, target, timeout):
    """Poll full_scans once a second until it reaches target; return (reached, last value, seconds waited)."""
    started = _clock()
    while True:
        try:
            value = read_knob(sysfs_path, 'full_scans')
        except (IOError, OSError):
            value = None
        waited = _clock() - started
        if isinstance(value, int) and value >= target:
            return True, value, waited
        if waited >= timeout:
            return False, value, waited
        time.sleep(1)


def hostname():
    try:
        return socket.gethostname()
    except (IOError, OSError):
        return platform.node()


def gather(sysfs_path=DEFAULT_SYSFS_PATH, proc_path='/proc', top=0, config_paths=None, size=None,
           ticks=None):
    """Everything ksm_info reports, as a dict; plus a list of warnings for the user."""
    warnings = []
    size = size or page_size()
    config_paths = default_kernel_config_paths() if config_paths is None else config_paths
    config_ksm, config_source, notes = kernel_config(config_paths)
    for note in notes:
        warnings.append('kernel config not readable: %s' % note)
    info = {
        'available': False,
        'reason': None,
        'sysfs_path': sysfs_path,
        'knobs': {},
        'counters': {},
        'page_size': size,
        'saved_bytes': None,
        'saved_mib': None,
        'general_profit_bytes': None,
        'general_profit_mib': None,
        'sharing_ratio': None,
        'unshared_ratio': None,
        'kernel': {'config_ksm': config_ksm, 'config_source': config_source, 'release': platform.release()},
        'ksmd': find_ksmd(proc_path, ticks),
        'top_processes': [],
        'host': hostname(),
    }

    if not os.path.isdir(sysfs_path):
        if config_ksm == 'n':
            why = 'the kernel is built without KSM (%s=n in %s)' % (CONFIG_OPTION, config_source)
        else:
            why = 'the kernel lacks KSM, or this is a container that cannot see it'
        info['reason'] = '%s does not exist: %s' % (sysfs_path, why)
    else:
        try:
            values = read_all(sysfs_path)
        except (IOError, OSError) as exc:
            values = None
            info['reason'] = 'cannot read %s: %s' % (sysfs_path, exc)
        if values is not None and not values:
            info['reason'] = '%s holds no readable KSM entries' % sysfs_path
        elif values is not None:
            info['available'] = True
            knobs = dict((k, v) for k, v in values.items() if k in KNOB_NAMES)
            # Every entry that is not a knob is a counter, including ones newer kernels add.
            counters = dict((k, v) for k, v in values.items() if k not in KNOB_NAMES)
            info['knobs'] = knobs
            info['counters'] = counters
            sharing = counters.get('pages_sharing')
            shared = counters.get('pages_shared')
            if isinstance(sharing, int):
                zero = counters.get('ksm_zero_pages')
                saved = (sharing + (zero if isinstance(zero, int) else 0)) * size
                info['saved_bytes'] = saved
                info['saved_mib'] = _to_mib(saved)
            profit = counters.get('general_profit')
            if isinstance(profit, int):
                info['general_profit_bytes'] = profit
                info['general_profit_mib'] = _to_mib(profit)
            if isinstance(sharing, int) and isinstance(shared, int):
                info['sharing_ratio'] = _ratio(sharing, shared)
            unshared = counters.get('pages_unshared')
            if isinstance(unshared, int) and isinstance(sharing, int):
                info['unshared_ratio'] = _ratio(unshared, sharing)

    processes, denied = top_processes(proc_path, top, size)
    info['top_processes'] = processes
    if denied:
        warnings.append('KSM statistics of %d processes were not readable (they need root: use become)' % denied)
    return info, warnings
