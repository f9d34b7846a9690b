# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The ld_preload planner: find how a service starts, decide what to write, record it in a FilePlan.

Decide-then-act: ``Planner.plan()`` reads the host, validates every option and records each file
operation in the FilePlan; nothing is written until the module calls ``plan.apply()`` (never in
check mode). Every refusal is an LdPreloadError whose message names the file, the line and the
method that works instead.

Private to the collection. Runs on the managed host: Python 2.7 / 3.6 clean.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import tempfile

from ansible_collections.samepage.ksm.plugins.module_utils import _optin
from ansible_collections.samepage.ksm.plugins.module_utils._fileplan import FilePlan, encode
from ansible_collections.samepage.ksm.plugins.module_utils._ld_preload import (
    CREATED_FILE, DENIED_ENVFILES, DROPIN_CREATED_DIR, LdPreloadError, check_regular_file, effective_variable,
    environment_drops, environment_events, fallback_offset, has_legacy_block, is_our_dropin,
    late_preload_assignments, mentions_preload, merge_preload, our_block_body, prctl_block_body, put_block,
    remove_our_block, render, render_dropin, script_offset, shell_block_body, simple_assignments,
    source_line_offset, sourced_files, surviving_file, unit_names, validate_dropin_name, validate_library,
    validate_merge_threshold, validate_service)

SHELLS = ('sh', 'bash', 'dash', 'ksh', 'mksh', 'zsh', 'ash')
C_LOCALE = {'LANG': 'C', 'LC_ALL': 'C', 'LC_MESSAGES': 'C'}
FUNCTIONS_FILES = ('/etc/init.d/functions', '/etc/rc.d/init.d/functions')
DROPIN_METHODS = ('systemd', 'memoryksm')


class Target(object):
    """What was found on the host for one service."""

    def __init__(self, params, base, plan):
        self.base = base
        self.plan = plan
        self.unit_dirs = params['unit_dirs']
        self.script = os.path.join(params['init_dir'], base)
        self.script_text = plan.read(self.script) if os.path.isfile(self.script) else None
        self.unit_file = None
        self.masked = False
        self.looked = []
        for name in unit_names(base):
            for directory in self.unit_dirs:
                path = os.path.join(directory, name)
                self.looked.append(path)
                if self.unit_file is None and os.path.lexists(path):
                    self.unit_file = path
                    self.masked = os.path.realpath(path) == '/dev/null'
        self.looked.append(self.script)
        self.dropin_dir = os.path.join(params['systemd_dir'], base + '.service.d')
        self.dropin = os.path.join(self.dropin_dir, params['dropin_name'])

    def other_dropins(self, dropin_name):
        """(file name, path) of the unit's drop-ins other than ours, in the order systemd applies them."""
        chosen = {}
        for name in unit_names(self.base):
            for directory in self.unit_dirs:
                dropin_dir = os.path.join(directory, name + '.d')
                try:
                    entries = os.listdir(dropin_dir)
                except OSError:
                    continue
                for entry in entries:
                    if entry.endswith('.conf') and entry != dropin_name and entry not in chosen:
                        chosen[entry] = os.path.join(dropin_dir, entry)
        return sorted(chosen.items())


def shebang_words(script_text):
    """The interpreter of a script's '#!' line and its one argument, e.g. ['/bin/sh', '-e']."""
    first = (script_text or '').split('\n', 1)[0]
    match = re.match(r'#!\s*(\S+)(?:\s+(\S+))?', first)
    if not match:
        return None
    return [w for w in match.groups() if w]


# ld_preload's defaults, shared with ksm_optin_info (which looks for the same artefacts).
LIBRARY = '/usr/lib64/libksm_preload.so'
LAUNCHER = '/usr/local/sbin/samepage-ksm-merge'


def location_spec():
    """The options that say where a service's startup and our artefacts live (argument spec)."""
    return dict(
        init_dir=dict(type='path', default='/etc/init.d'),
        envfile_dirs=dict(type='list', elements='path', default=['/etc/sysconfig', '/etc/default']),
        systemd_dir=dict(type='path', default='/etc/systemd/system'),
        unit_dirs=dict(type='list', elements='path', default=[
            '/etc/systemd/system', '/run/systemd/system', '/usr/lib/systemd/system', '/lib/systemd/system']),
        dropin_name=dict(type='str', default='samepage-ksm.conf'),
    )


class Planner(object):
    """Decide: read the state, validate all input and record every file operation in ``plan``."""

    def __init__(self, module, plan, params=None):
        self.module = module
        self.plan = plan
        self.params = module.params if params is None else params
        self.warnings = []
        self.result = dict(changed=False, method=self.params['method'], path=None, files=[],
                           restart_needed=False, daemon_reload_needed=False, ld_preload=None, reason=None)

    # -- validation -------------------------------------------------------------------------
    def validate(self):
        params = self.params
        self.base = validate_service(params['name'])
        self.library = validate_library(params['library'])
        self.launcher = validate_library(params['launcher'], option='launcher',
                                         example='/usr/local/sbin/samepage-ksm-merge')
        validate_dropin_name(params['dropin_name'])
        self.threshold = validate_merge_threshold(params['merge_threshold'])
        for option in ('envfile_dirs', 'unit_dirs'):
            if not params[option]:
                raise LdPreloadError('%s must list at least one directory' % option)
            for directory in params[option]:
                if not os.path.isabs(directory):
                    raise LdPreloadError('%s entry %r must be an absolute path' % (option, directory))
        for option in ('init_dir', 'systemd_dir'):
            if not os.path.isabs(params[option]):
                raise LdPreloadError('%s %r must be an absolute path' % (option, params[option]))
        self.envfile = params['envfile']
        if self.envfile is not None:
            validate_library(self.envfile, option='envfile', example='/etc/default/%s' % self.base)
            if params['method'] not in ('envfile', 'auto'):
                raise LdPreloadError('envfile is used by method=envfile only (got method=%s)' % params['method'])
        self.dirs = [os.path.normpath(d) for d in params['envfile_dirs']]
        self.etc_dir = os.path.dirname(os.path.normpath(params['init_dir']))

    def need_file(self, option, path, executable=False):
        exists = os.path.lexists(path) and os.path.exists(path)
        is_file = os.path.isfile(path)
        runnable = None
        if executable and is_file:
            runnable = os.access(path, os.X_OK)
        warning = check_regular_file(option, path, exists, is_file, self.module.check_mode,
                                     executable=runnable if executable else None)
        if warning:
            self.warnings.append(warning)

    def check_interpreter(self, path):
        """A launcher whose '#!' interpreter is missing would stop the service from starting at all."""
        if not os.path.isfile(path):
            return
        with open(path, 'rb') as handle:
            first = handle.readline(512).decode('latin-1')
        words = shebang_words(first)
        if not words:
            return
        interpreter, found = words[0], os.path.exists(words[0])
        if found and os.path.basename(interpreter) == 'env' and len(words) > 1:
            interpreter = words[1]
            found = self.module.get_bin_path(interpreter) is not None
        if not found:
            message = ('launcher %s runs under %s, which is not on this host: the init script would exec it and the '
                       'service would not start; install it with the host\'s Python in its first line' % (path, interpreter))
            if self.module.check_mode:
                self.warnings.append(message)
            else:
                raise LdPreloadError(message + '; nothing was written')

    # -- helpers ----------------------------------------------------------------------------
    def shell_for(self, script_text):
        words = shebang_words(script_text)
        if words:
            interpreter = words[0]
            if os.path.basename(interpreter) == 'env' and len(words) > 1:
                interpreter = words[1]
            name = os.path.basename(interpreter)
            if name in SHELLS:
                if os.path.isabs(interpreter) and os.access(interpreter, os.X_OK):
                    return interpreter
                found = self.module.get_bin_path(name)
                if found:
                    return found
        return self.module.get_bin_path('sh', required=True)

    def syntax_error(self, shell, text):
        """stderr of '<shell> -n' on a temporary copy of text, or None when it parses."""
        fd, tmp = tempfile.mkstemp(prefix='ld_preload.', suffix='.sh', dir=self.module.tmpdir)
        try:
            with os.fdopen(fd, 'wb') as handle:
                handle.write(encode(text))
            rc, out, err = self.module.run_command([shell, '-n', tmp], environ_update=C_LOCALE)
        finally:
            os.unlink(tmp)
        if rc == 0:
            return None
        return (err or out or 'exit status %d' % rc).strip().replace(tmp, '<new file>')

    def check_shell(self, path, shell, before, after):
        if after is None or after == before:
            return
        error = self.syntax_error(shell, after)
        if error is None:
            return
        if before is not None and self.syntax_error(shell, before) is not None:
            raise LdPreloadError('%s already fails "%s -n" as it is (%s); fix it by hand first, nothing was '
                                 'written' % (path, shell, error))
        raise LdPreloadError('%s would fail "%s -n" after the edit (%s); nothing was written. Use another '
                             'method (systemd, envfile) or edit the file by hand' % (path, shell, error))

    def write(self, method, path, before, after, mode=None):
        if after == before:
            return
        self.plan.write(path, after, mode=mode, backup=self.params['backup'])
        self.methods.append(method)

    def remove(self, method, path, rmdir=None):
        if self.plan.remove(path, backup=self.params['backup'], rmdir=rmdir):
            self.methods.append(method)

    def unknown(self, what):
        raise LdPreloadError('service %r: %s; looked for: %s' % (self.params['name'], what, ', '.join(self.looked)))

    def functions_text(self, script_text):
        for path in sourced_files(script_text):
            if path in FUNCTIONS_FILES or os.path.basename(path) == 'functions':
                return self.plan.read(path)
        return None

    def drop_error(self, target, drops, method, survivor=None):
        number, line, kind, what = drops[0]
        if survivor is not None:
            fix = ('method=envfile (or auto) writes %s, which the command run after it reads, or use method=prctl '
                   '(the KSM flag is a process attribute and survives it)' % survivor)
        else:
            fix = ('use method=prctl (the KSM flag is a process attribute and survives it), method=memoryksm or '
                   'method=systemd where systemd runs the service, or method=envfile with envfile: set to the file '
                   'that the command itself reads')
        raise LdPreloadError(
            '%s line %d: "%s" %s: LD_PRELOAD exported by method=%s would not reach the daemon, so nothing was '
            'written; %s' % (target.script, number, line, what, method, fix))

    def late_error(self, path, late, method, where):
        number, line = late[0]
        raise LdPreloadError(
            '%s line %d: "%s" sets LD_PRELOAD %s, so the value of method=%s would be lost; nothing was written. '
            'Use method=prctl, or method=systemd/memoryksm where systemd runs the service, or edit the script by '
            'hand' % (path, number, line, where, method))

    # -- choosing ---------------------------------------------------------------------------
    def existing(self, target):
        """(method, path) of an artefact of ours that is already there, or (None, None)."""
        dropin = self.plan.read(target.dropin) if os.path.isfile(target.dropin) else None
        if target.unit_file is not None and is_our_dropin(dropin):
            return ('memoryksm' if 'MemoryKSM=yes' in dropin.splitlines() else 'systemd'), target.dropin
        if target.script_text is not None:
            if our_block_body(target.script_text, self.base, 'PRCTL') is not None:
                return 'prctl', target.script
            if our_block_body(target.script_text, self.base, legacy=True) is not None:
                return 'sysv', target.script
        for path in self.envfile_candidates(target):
            if our_block_body(self.plan.read(path), self.base, legacy=self.owns_legacy(target, path)) is not None:
                return 'envfile', path
        return None, None

    def sticky(self, target):
        """The method of an artefact of ours that is already there (an OS upgrade alone changes nothing)."""
        return self.existing(target)[0]

    def pick(self, target):
        method = self.sticky(target)
        if method is not None:
            self.result['reason'] = 'kept: the service already has an artefact of method=%s' % method
            return method
        running = _optin.systemd_running()
        if target.unit_file is not None and running:
            probe = _optin.probe_memoryksm(self.module, running=True)
            self.probe = probe
            if probe['works']:
                self.result['reason'] = probe['reason']
                return 'memoryksm'
            self.result['reason'] = 'systemd runs the service; MemoryKSM not proven (%s): preload drop-in' % (
                probe['reason'])
            return 'systemd'
        if target.script_text is not None:
            self.result['reason'] = ('systemd is not the running init: the SysV init script starts the service'
                                     if not running else 'no systemd unit: the SysV init script starts the service')
            return 'sysv'
        if target.unit_file is not None:
            self.unknown('systemd is not the running init (%s does not exist) and there is no SysV init script, so '
                         'nothing would start the service with its unit %s'
                         % (_optin.SYSTEMD_RUNTIME_DIR, target.unit_file))
        self.unknown('no systemd unit and no SysV init script found')

    # -- present ----------------------------------------------------------------------------
    def present(self, target):
        method = self.params['method']
        auto = method == 'auto'
        if auto:
            method = self.pick(target)
        self.result['method'] = method
        if method == 'memoryksm':
            self.present_memoryksm(target, auto)
        elif method == 'systemd':
            self.need_file('library', self.library)
            self.present_dropin(target, method)
        elif method == 'prctl':
            self.present_prctl(target)
        elif method == 'sysv':
            self.present_sysv(target, auto)
        else:
            self.present_envfile(target)

    def present_memoryksm(self, target, auto):
        dropin = self.plan.read(target.dropin) if os.path.isfile(target.dropin) else None
        already = is_our_dropin(dropin) and 'MemoryKSM=yes' in dropin.splitlines()
        if not auto and not already:
            if target.unit_file is None:
                self.unknown('no systemd unit found (method=memoryksm needs one)')
            probe = _optin.probe_memoryksm(self.module)
            if not probe['works']:
                raise LdPreloadError('method=memoryksm does not work on this host: %s; nothing was written. Use '
                                     'method=systemd (a preload drop-in) or method=auto, which falls back to it'
                                     % probe['reason'])
            self.result['reason'] = probe['reason']
        self.present_dropin(target, 'memoryksm')

    def present_dropin(self, target, method):
        params = self.params
        if target.unit_file is None:
            self.unknown('no systemd unit found (method=%s needs one)' % method)
        if target.masked:
            raise LdPreloadError('unit %s is masked (a link to /dev/null); unmask it first' % target.unit_file)
        if not os.path.isdir(params['systemd_dir']):
            raise LdPreloadError('systemd_dir %s is not a directory' % params['systemd_dir'])
        if not _optin.systemd_running() and self.params['method'] != 'auto':
            self.warnings.append('systemd is not the running init here (%s does not exist): the drop-in takes '
                                 'effect only where systemd starts %s' % (_optin.SYSTEMD_RUNTIME_DIR, target.unit_file))
        events = environment_events(self.plan.read(target.unit_file) or '')
        for name, path in target.other_dropins(params['dropin_name']):
            dropin_events = environment_events(self.plan.read(path) or '')
            events.extend(dropin_events)
            if name > params['dropin_name'] and any(e is None or 'LD_PRELOAD' in e for e in dropin_events):
                self.warnings.append('%s sorts after %s and sets or resets LD_PRELOAD, which overrides ours; '
                                     'choose a dropin_name that sorts later' % (path, params['dropin_name']))
        existing = effective_variable(events, 'LD_PRELOAD')
        before = self.plan.read(target.dropin)
        if before is not None and not is_our_dropin(before):
            raise LdPreloadError('%s exists and is not managed by samepage.ksm (its first line is not %r); '
                                 'choose another dropin_name' % (target.dropin, before.splitlines()[:1]))
        if before is None:
            created_dir = not os.path.isdir(target.dropin_dir)
        else:
            created_dir = DROPIN_CREATED_DIR in before.splitlines()
        if method == 'memoryksm':
            preload = existing
            if self.threshold is not None:
                self.warnings.append('merge_threshold is not used by method=memoryksm')
        else:
            preload = merge_preload(existing, self.library)
        after = render_dropin(method, preload, self.threshold, created_dir)
        self.result.update(path=target.dropin, ld_preload=preload)
        if after != before and not os.path.isdir(target.dropin_dir):
            self.plan.mkdir(target.dropin_dir)
        self.write(method, target.dropin, before, after, mode=0o644)

    def present_sysv(self, target, auto):
        if target.script_text is None:
            self.unknown('no SysV init script found (method=sysv needs one)')
        self.need_file('library', self.library)
        before = target.script_text
        outside = remove_our_block(before, self.base, legacy=True)
        drops = environment_drops(outside, self.functions_text(outside))
        if drops:
            survivor = surviving_file(self.base, outside, drops, self.etc_dir)
            if survivor is not None and auto and os.path.isfile(survivor):
                self.result['method'] = 'envfile'
                self.result['reason'] = ('%s line %d empties the environment (%s); %s, which the command run after '
                                         'it reads, keeps the setting'
                                         % (target.script, drops[0][0], drops[0][2], survivor))
                return self.present_envfile(target, survivor=survivor)
            self.drop_error(target, drops, 'sysv', survivor)
        offset, rule = script_offset(outside)
        late = late_preload_assignments(outside, offset)
        if late:
            self.late_error(target.script, late, 'sysv', 'after the place of the block or inside a branch or function')
        append = mentions_preload(outside)
        start = remove_our_block(before, self.base, kinds=('PRCTL',))
        block = render(shell_block_body(self.library, self.threshold, append), self.base)
        after = put_block(start, block, offset, self.base, legacy=True)
        self.result.update(path=target.script, ld_preload=self.static_preload(outside, append))
        for sourced in sourced_files(outside):
            if os.path.isfile(sourced) and mentions_preload(remove_our_block(self.plan.read(sourced), self.base)):
                self.warnings.append('%s, which the script sources, sets LD_PRELOAD too and may override the '
                                     'block; method=envfile appends to it there instead' % sourced)
        if after != before and our_block_body(before, self.base, legacy=True) is None:
            self.result['position'] = rule
        self.check_shell(target.script, self.shell_for(before), before, after)
        self.write('sysv', target.script, before, after)

    def present_prctl(self, target):
        if target.script_text is None:
            if target.unit_file is not None:
                raise LdPreloadError('method=prctl wraps a SysV init script, and %s has only the systemd unit %s; '
                                     'use method=memoryksm (ksm_optin_info shows whether it works here) or '
                                     'method=systemd' % (self.params['name'], target.unit_file))
            self.unknown('no SysV init script found (method=prctl needs one)')
        if target.unit_file is not None and _optin.systemd_running():
            raise LdPreloadError('method=prctl wraps the SysV init script, but systemd is the running init and starts '
                                 '%s from %s (it does not run the init script); wrapping ExecStart= is not done. Use '
                                 'method=memoryksm (ksm_optin_info shows whether it works here) or method=systemd'
                                 % (self.params['name'], target.unit_file))
        if self.base.endswith('.sh'):
            raise LdPreloadError('%s ends in .sh: Debian\'s rc sources such scripts instead of running them, so a '
                                 're-exec would replace rc itself; use method=sysv' % target.script)
        self.need_file('launcher', self.launcher, executable=True)
        self.check_interpreter(self.launcher)
        before = target.script_text
        words = shebang_words(before) or ['/bin/sh']
        interpreter = words[0]
        if os.path.basename(interpreter) == 'env' and len(words) > 1:
            words = words[1:]
        if os.path.basename(words[0]) not in SHELLS:
            raise LdPreloadError('%s is run by %s, not a shell this module knows (%s), so it cannot be re-executed '
                                 'under the launcher; use method=sysv (LD_PRELOAD), or method=memoryksm or systemd '
                                 'where systemd runs the service' % (target.script, words[0], ', '.join(SHELLS)))
        outside = remove_our_block(before, self.base, legacy=True)
        start = remove_our_block(before, self.base, kinds=('LD_PRELOAD',), legacy=True)
        block = render(prctl_block_body(self.launcher, words), self.base, 'PRCTL')
        after = put_block(start, block, fallback_offset(outside), self.base, 'PRCTL')
        if self.threshold is not None:
            self.warnings.append('merge_threshold is not used by method=prctl')
        self.result.update(path=target.script, ld_preload=None)
        self.check_shell(target.script, self.shell_for(before), before, after)
        self.write('prctl', target.script, before, after)

    def static_preload(self, outside, append):
        if not append:
            return self.library
        return merge_preload(simple_assignments(outside).get('LD_PRELOAD'), self.library)

    # -- env files --------------------------------------------------------------------------
    def own_envfiles(self, target):
        """<dir>/<service>, then <dir>/$NAME when the script assigns NAME a literal."""
        names = [self.base]
        if target.script_text is not None:
            name = simple_assignments(target.script_text).get('NAME')
            if name and name != self.base and '/' not in name:
                names.append(name)
        return [os.path.join(d, n) for n in names for d in self.dirs]

    def owns_legacy(self, target, path):
        """An unnamed block of an older release is ours only in a file that is the service's own."""
        return path in self.own_envfiles(target) or path == self.envfile or (
            path == surviving_file(self.base, target.script_text or '', [(0, '', 'env -i', '')], self.etc_dir))

    def sourced_by_others(self, path, script):
        """Other init scripts in init_dir that source ``path``."""
        others = []
        init_dir = self.params['init_dir']
        try:
            entries = sorted(os.listdir(init_dir))
        except OSError:
            return others
        mine = os.path.realpath(script)
        for entry in entries:
            full = os.path.join(init_dir, entry)
            if full == script or os.path.realpath(full) == mine or not os.path.isfile(full):
                continue
            if entry.startswith('.') or entry.endswith(('~', '.dpkg-old', '.dpkg-dist', '.dpkg-new', '.rpmnew',
                                                        '.rpmsave', '.orig')):
                continue
            try:
                size = os.path.getsize(full)
            except OSError:
                continue
            if size > 1024 * 1024:
                continue
            if path in sourced_files(self.plan.read(full) or ''):
                others.append(full)
        return others

    def envfile_path(self, target, survivor=None):
        """(path, explicit) of the env file to edit; refuses shared and system-wide files."""
        if self.envfile is not None:
            if target.script_text is not None and self.envfile not in sourced_files(target.script_text) \
                    and self.envfile != survivor:
                self.warnings.append('%s does not source %s (as far as a reading of it shows); make sure the '
                                     'service reads it' % (target.script, self.envfile))
            return self.envfile, True
        if survivor is not None:
            return survivor, False
        own = self.own_envfiles(target)
        if target.script_text is None:
            for path in own[:len(self.dirs)]:
                if os.path.isfile(path):
                    return path, False
            self.looked.extend(own[:len(self.dirs)])
            self.unknown('no SysV init script and no existing environment file found')
        sourced = sourced_files(remove_our_block(target.script_text, self.base, legacy=True))
        for path in own:
            if path in sourced:
                return path, False
        in_dirs = [p for p in sourced if os.path.dirname(p) in self.dirs]
        if in_dirs:
            raise LdPreloadError(
                'init script %s sources no environment file of its own (%s); it sources %s, which is not the '
                "service's own file: every service that reads it would get LD_PRELOAD. Use method=sysv, or pass "
                'envfile: with the path to edit that file anyway; nothing was written'
                % (target.script, ' or '.join(own), ', '.join(in_dirs)))
        raise LdPreloadError(
            'init script %s does not source an environment file in %s (it sources: %s); use method=sysv to edit '
            'the script itself' % (target.script, ', '.join(self.dirs), ', '.join(sourced) or 'nothing'))

    def present_envfile(self, target, survivor=None):
        if survivor is None and self.envfile is None and target.script_text is not None:
            # method=envfile (or a kept envfile artefact) on a script whose env -i command reads its own file
            outside = remove_our_block(target.script_text, self.base, legacy=True)
            drops = environment_drops(outside, self.functions_text(outside))
            candidate = surviving_file(self.base, outside, drops, self.etc_dir) if drops else None
            if candidate is not None and os.path.isfile(candidate):
                survivor = candidate
        path, explicit = self.envfile_path(target, survivor)
        self.need_file('library', self.library)
        script_outside = remove_our_block(target.script_text, self.base, legacy=True) \
            if target.script_text is not None else ''
        if not explicit:
            if os.path.basename(path) in DENIED_ENVFILES:
                raise LdPreloadError('%s is a system-wide file (read by many services), so it is not edited for %s; '
                                     'use method=sysv, or pass envfile: %s to edit it anyway; nothing was written'
                                     % (path, self.params['name'], path))
            others = self.sourced_by_others(path, target.script)
            if others:
                raise LdPreloadError('%s is also sourced by %s: editing it would opt those services in too; use '
                                     'method=sysv, or pass envfile: %s if every one of them should get it; nothing '
                                     'was written' % (path, ', '.join(others), path))
        if target.script_text is not None and survivor is None:
            drops = environment_drops(script_outside, self.functions_text(script_outside))
            if drops:
                self.drop_error(target, drops, 'envfile')
            offset = source_line_offset(script_outside, path)
            late = late_preload_assignments(script_outside, offset if offset is not None else 0)
            if late:
                self.late_error(target.script, late, 'envfile', 'after it sources %s or inside a branch or function'
                                % path)
        before = self.plan.read(path)
        if before is None and not os.path.isdir(os.path.dirname(path)):
            raise LdPreloadError('cannot create %s: directory %s does not exist' % (path, os.path.dirname(path)))
        legacy = self.owns_legacy(target, path)
        outside = remove_our_block(before, self.base, legacy=legacy) or ''
        body = our_block_body(before, self.base, legacy=legacy)
        created = before is None or CREATED_FILE in (body or [])
        append = mentions_preload(outside) or mentions_preload(script_outside)
        block = render(shell_block_body(self.library, self.threshold, append, created_file=created), self.base)
        after = put_block(before or '', block, len(outside), self.base, legacy=legacy)
        self.result.update(path=path, ld_preload=self.static_preload(outside + script_outside, append))
        self.check_shell(path, self.shell_for(target.script_text), before, after)
        self.write('envfile', path, before, after, mode=0o644 if before is None else None)

    def envfile_candidates(self, target):
        """Env files that may hold a block of ours: own files, the surviving file, the explicit envfile,
        and every sourced file in envfile_dirs (a named block is ours wherever it is)."""
        paths = list(self.own_envfiles(target))
        if target.script_text is not None:
            survivor = surviving_file(self.base, target.script_text, [(0, '', 'env -i', '')], self.etc_dir)
            if survivor:
                paths.append(survivor)
            paths.extend(p for p in sourced_files(target.script_text) if os.path.dirname(p) in self.dirs)
        if self.envfile:
            paths.append(self.envfile)
        unique = []
        for path in paths:
            if path not in unique and os.path.isfile(path):
                unique.append(path)
        return unique

    # -- absent -----------------------------------------------------------------------------
    def absent(self, target):
        method = self.params['method']
        if method in ('auto',) + DROPIN_METHODS:
            self.absent_dropin(target, 'systemd' if method == 'auto' else method)
        if method in ('auto', 'sysv', 'prctl') and target.script_text is not None:
            before = target.script_text
            kinds = {'auto': ('LD_PRELOAD', 'PRCTL'), 'sysv': ('LD_PRELOAD',), 'prctl': ('PRCTL',)}[method]
            after = remove_our_block(before, self.base, kinds=kinds, legacy=True)
            self.result['path'] = self.result['path'] or target.script
            if after != before:
                kind = 'prctl' if our_block_body(before, self.base, 'PRCTL') is not None and method != 'sysv' \
                    else 'sysv'
                self.check_shell(target.script, self.shell_for(before), before, after)
                self.write(kind, target.script, before, after)
        if method in ('auto', 'envfile'):
            for path in self.envfile_candidates(target):
                before = self.plan.read(path)
                legacy = self.owns_legacy(target, path)
                body = our_block_body(before, self.base, legacy=legacy)
                if body is None:
                    if has_legacy_block(before) and not legacy:
                        self.warnings.append('%s holds an unnamed samepage.ksm block of an older release that may '
                                             'belong to another service; left in place' % path)
                    continue
                after = remove_our_block(before, self.base, legacy=legacy)
                self.result['path'] = self.result['path'] or path
                if CREATED_FILE in body and after == '':
                    self.remove('envfile', path)
                else:
                    self.write('envfile', path, before, after)
        if self.methods:
            self.result['method'] = self.methods[0]
            self.result['path'] = self.plan.files[0]
        elif method == 'auto':
            if target.unit_file is not None and _optin.systemd_running():
                self.result['method'] = 'systemd'
            elif target.script_text is not None:
                self.result['method'] = 'sysv'

    def absent_dropin(self, target, method):
        before = self.plan.read(target.dropin)
        if before is None:
            return
        if not is_our_dropin(before):
            self.warnings.append('%s is not managed by samepage.ksm; left in place' % target.dropin)
            return
        rmdir = None
        if DROPIN_CREATED_DIR in before.splitlines():
            rmdir = target.dropin_dir
        self.result['path'] = target.dropin
        self.remove('memoryksm' if 'MemoryKSM=yes' in before.splitlines() else 'systemd', target.dropin,
                    rmdir=rmdir)

    # -- entry ------------------------------------------------------------------------------
    def plan_all(self):
        self.methods = []
        self.probe = None
        self.validate()
        target = Target(self.params, self.base, self.plan)
        self.looked = list(target.looked)
        if self.params['state'] == 'present':
            self.present(target)
        else:
            self.absent(target)
        self.result['files'] = list(self.plan.files)
        self.result['changed'] = self.plan.changed
        self.result['restart_needed'] = self.plan.changed
        self.result['daemon_reload_needed'] = any(m in DROPIN_METHODS for m in self.methods)
        return self.plan


def existing_artefact(module, name, locations):
    """(method, path) of the artefact of ours already in the startup of service ``name``, or (None, None).

    The detection of method=auto's stickiness (``Planner.existing``), read-only. ``locations`` holds
    ld_preload's dropin_name, init_dir, envfile_dirs, systemd_dir and unit_dirs; they are validated
    as ld_preload validates them (LdPreloadError names the option).
    """
    params = dict(locations, name=name, state='present', method='auto', envfile=None, merge_threshold=None,
                  library=LIBRARY, launcher=LAUNCHER,
                  backup=False)
    planner = Planner(module, FilePlan(module), params=params)
    planner.validate()
    target = Target(params, planner.base, planner.plan)
    return planner.existing(target)
