# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which whole-process KSM opt-in works on this host, proven by running it, not by versions.

- ``probe_prctl``: a forked child calls ``prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0)`` and execs
  ``cat /proc/self/ksm_stat``; the flag works for a launcher when the exec'd program still
  shows ``ksm_merge_any: yes`` (Linux 6.4 and later keep it across fork and exec).
- ``probe_memoryksm``: a transient unit ``systemd-run --wait --pipe -p MemoryKSM=yes cat
  /proc/self/ksm_stat``; works only when it runs and prints ``ksm_merge_any: yes`` (systemd 254
  and 255 passed garbage to the prctl and every such unit failed with EXIT_KSM; systemd < 254
  does not know the key).

Both only start a short-lived process: nothing on the host is changed.

- ``services_facts``: per service, the opt-in its startup already has from us (the ld_preload
  method of the artefact found, and the mechanism it belongs to), so a caller choosing
  automatically can keep it instead of switching after an upgrade made a better one work.

Private to the collection. Runs on the managed host: Python 2.7 / 3.6 clean.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

PR_SET_MEMORY_MERGE = 67
SYSTEMD_RUNTIME_DIR = '/run/systemd/system'
C_LOCALE = {'LANG': 'C', 'LC_ALL': 'C', 'LC_MESSAGES': 'C'}
CAT = '/bin/cat'


# ld_preload method of an artefact -> the mechanism (ksm_container_optin) it belongs to
OPTIN_OF_METHOD = {'memoryksm': 'memoryksm', 'prctl': 'prctl', 'systemd': 'preload', 'sysv': 'preload',
                   'envfile': 'preload'}


def kernel_release():
    return os.uname()[2]


def systemd_running(runtime_dir=SYSTEMD_RUNTIME_DIR):
    """systemd is the running init (sd_booted()): its runtime directory exists.

    Unit files in /lib/systemd/system prove nothing: Debian packages ship them on SysV hosts too.
    """
    return os.path.isdir(runtime_dir)


def parse_systemd_version(output):
    """'systemd 252 (252.38-1~deb12u1)' -> 252; None when unrecognised."""
    match = re.match(r'\s*systemd\s+(\d+)', output or '')
    return int(match.group(1)) if match else None


def systemd_version(module):
    systemctl = module.get_bin_path('systemctl')
    if systemctl is None:
        return None
    rc, out, dummy = module.run_command([systemctl, '--version'], environ_update=C_LOCALE)
    if rc != 0:
        return None
    return parse_systemd_version(out)


def merge_any(ksm_stat_text):
    """True/False from a ksm_stat text's 'ksm_merge_any:' line; None when the line is missing."""
    for line in (ksm_stat_text or '').splitlines():
        name, sep, value = line.partition(':')
        if sep and name.strip() == 'ksm_merge_any':
            return value.strip() == 'yes'
    return None


def _result(works, reason):
    return dict(works=bool(works), reason=reason)


def _to_text(data):
    if isinstance(data, bytes):
        return data.decode('latin-1')
    return data


def probe_prctl(cat=CAT):
    """Does a process keep PR_SET_MEMORY_MERGE across exec on the running kernel?"""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (ImportError, OSError, AttributeError) as exc:
        return _result(False, 'cannot load prctl from the C library: %s' % exc)
    if not os.path.exists('/proc/self/ksm_stat'):
        return _result(False, 'kernel %s has no /proc/PID/ksm_stat (PR_SET_MEMORY_MERGE needs Linux 6.4 or '
                              'later)' % kernel_release())
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            os.close(read_fd)
            arg = ctypes.c_ulong
            rc = prctl(ctypes.c_int(PR_SET_MEMORY_MERGE), arg(1), arg(0), arg(0), arg(0))
            if rc != 0:
                os.write(write_fd, ('prctl-errno %d\n' % ctypes.get_errno()).encode('ascii'))
                os._exit(3)
            os.dup2(write_fd, 1)
            os.execv(cat, [cat, '/proc/self/ksm_stat'])
        except BaseException:  # pylint: disable=broad-except
            pass
        os._exit(4)
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    dummy, status = os.waitpid(pid, 0)
    output = _to_text(b''.join(chunks))
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    if output.startswith('prctl-errno'):
        number = int(output.split()[1])
        import errno as errno_module
        return _result(False, 'prctl(PR_SET_MEMORY_MERGE) failed on kernel %s: [%s] %s' % (
            kernel_release(), errno_module.errorcode.get(number, number), os.strerror(number)))
    if code != 0:
        return _result(False, 'the probe child exited with status %d (could not exec %s)' % (code, cat))
    flag = merge_any(output)
    if flag is None:
        return _result(False, 'kernel %s shows no ksm_merge_any in /proc/PID/ksm_stat' % kernel_release())
    if not flag:
        return _result(False, 'kernel %s drops PR_SET_MEMORY_MERGE across exec (ksm_merge_any: no after exec)'
                       % kernel_release())
    return _result(True, 'prctl(PR_SET_MEMORY_MERGE) set in a child survived exec: %s shows ksm_merge_any: yes'
                   % cat)


def probe_memoryksm(module, running=None, cat=CAT, timeout=60):
    """Does a transient unit with MemoryKSM=yes start and get ksm_merge_any: yes?"""
    if running is None:
        running = systemd_running()
    if not running:
        return _result(False, 'systemd is not the running init (%s does not exist)' % SYSTEMD_RUNTIME_DIR)
    systemd_run = module.get_bin_path('systemd-run')
    if systemd_run is None:
        return _result(False, 'systemd-run was not found')
    command = [systemd_run, '--quiet', '--wait', '--pipe', '--collect', '-p', 'MemoryKSM=yes', cat,
               '/proc/self/ksm_stat']
    timeout_bin = module.get_bin_path('timeout')
    if timeout_bin is not None:
        command = [timeout_bin, str(timeout)] + command
    rc, out, err = module.run_command(command, environ_update=C_LOCALE)
    detail = ' '.join((err or out or '').split())[:300]
    if rc != 0:
        return _result(False, 'a transient unit with MemoryKSM=yes failed (exit status %d%s); systemd 254 and 255 '
                              'fail every such unit (EXIT_KSM), older ones do not know the key'
                       % (rc, ': ' + detail if detail else ''))
    flag = merge_any(out)
    if flag is None:
        return _result(False, 'a transient unit with MemoryKSM=yes ran, but printed no ksm_merge_any line (%s)'
                       % (detail or 'no output'))
    if not flag:
        return _result(False, 'a transient unit with MemoryKSM=yes ran with ksm_merge_any: no (this systemd ignores '
                              'the key)')
    return _result(True, 'a transient unit with MemoryKSM=yes ran with ksm_merge_any: yes')


def optin_facts(module, probe_memoryksm_unit=True, running=None):
    """Everything ksm_optin_info returns."""
    if running is None:
        running = systemd_running()
    facts = dict(
        kernel_release=kernel_release(),
        systemd_running=running,
        systemd_version=systemd_version(module) if running else None,
        prctl=probe_prctl(),
    )
    if probe_memoryksm_unit:
        facts['memoryksm'] = probe_memoryksm(module, running=running)
    else:
        facts['memoryksm'] = _result(False, 'not probed (memoryksm_probe=false)')
    return facts


def services_facts(names, detect):
    """{name: {method, optin, path}} for each name; ``detect(name)`` gives (method, path) or (None, None).

    ``method`` is the ld_preload method of the artefact of ours found in the service's startup
    (memoryksm, systemd, prctl, sysv, envfile), ``optin`` its mechanism (memoryksm, prctl, preload);
    all three are None when the service has none.
    """
    services = {}
    for name in names:
        method, path = detect(name)
        services[name] = dict(method=method, optin=OPTIN_OF_METHOD.get(method), path=path)
    return services
