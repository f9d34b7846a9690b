#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ld_preload
short_description: Make a service start with a preloaded library (LD_PRELOAD) or with MemoryKSM
version_added: 1.0.0
description:
  - Finds how a service starts and edits exactly that, idempotently, so that its processes start
    with O(library) in C(LD_PRELOAD) (for example C(libksm_preload.so), which opts a process into
    KSM), or, on systemd 254 and later with a Linux 6.4 or later kernel, with C(MemoryKSM=yes).
  - "O(method=sysv): a managed block in the SysV init script C(<init_dir>/<service>) that sets and
    exports C(LD_PRELOAD). It goes right after the script's first top-level C(PATH) assignment
    (after its C(export PATH) when that follows, also for C(PATH=...; export PATH) on one line and
    C(export PATH=...)). Without such a line it goes after the shebang, the LSB
    C(### BEGIN INIT INFO) header and all leading comment and blank lines, before the first command.
    When the script itself assigns C(LD_PRELOAD) at top level further down, the block goes after
    that line so that the script's value is kept."
  - "O(method=envfile): the same block in the environment file the init script sources
    (a C(. /etc/sysconfig/<service>) or C(. /etc/default/$NAME) line; a variable is resolved when
    the script assigns it a literal value). The file is created (mode C(0644)) when missing. When the
    init script sources no file in O(envfile_dirs) the module fails and suggests O(method=sysv).
    Without an init script an existing C(<dir>/<service>) in O(envfile_dirs) is edited."
  - "O(method=systemd): a drop-in C(<systemd_dir>/<service>.service.d/<dropin_name>) with
    C(Environment=\"LD_PRELOAD=...\"). Any C(LD_PRELOAD) the unit or its other drop-ins already set
    (read from every unit file and C(.service.d) directory in O(unit_dirs)) is kept first; the
    library is added once."
  - "O(method=memoryksm): a drop-in with C(MemoryKSM=yes); systemd then opts the service's
    processes into KSM and no library is needed."
  - "O(method=auto): a systemd unit found in O(unit_dirs) gives C(memoryksm) when the kernel is
    6.4 or later and C(systemctl --version) says 254 or later (the kernel is checked first;
    C(systemctl) only runs when the kernel qualifies), C(systemd) otherwise; else an init script
    gives C(sysv); else the module fails and lists every path it looked at."
  - Entries already in C(LD_PRELOAD) are kept and never duplicated. When the script, the env file
    or the unit already sets C(LD_PRELOAD), the block appends the library only when the value
    does not hold it yet (checked when the script runs).
  - Every edited script and env file must pass C(sh -n) (the shell of the script's shebang when it
    is a known shell, C(/bin/sh) otherwise) before it replaces the original; otherwise the module
    fails and writes nothing. Mode and owner of edited files are kept.
  - O(state=absent) removes exactly what this module added (its block, or its drop-in file and the
    C(.service.d) directory when this module created it and it is left empty).
author:
  - samepage.ksm maintainers (@samepage)
extends_documentation_fragment:
  - samepage.ksm._attributes
  - samepage.ksm._attributes.platform
  - samepage.ksm._attributes.files
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  safe_file_operations:
    support: full
options:
  service:
    description:
      - Name of the service, for example C(mysql) or C(mysqld.service).
      - "Accepted: letters, digits and C(_), C(.), C(@), C(:), C(-); no C(/), no C(..), no leading C(-).
        A C(.service) suffix is stripped; C(name@instance) also reads the template C(name@.service)."
    type: str
    required: true
  state:
    description:
      - V(present) makes the service start with the library (or MemoryKSM); V(absent) removes what
        this module added.
      - With V(absent) and O(method=auto), every artefact of this module for the service (drop-in,
        init script block, env file blocks) is removed.
    type: str
    choices: [present, absent]
    default: present
  method:
    description:
      - How the service is configured; see the description. V(auto) picks the best one the host supports.
    type: str
    choices: [auto, sysv, envfile, systemd, memoryksm]
    default: auto
  library:
    description:
      - Absolute path of the library to preload.
      - "Accepted: letters, digits and C(_), C(.), C(+), C(,), C(=), C(@), C(%), C(-), C(/); no whitespace,
        quotes, C($), C(:), backslash or glob characters; a normalized path."
      - Not used by O(method=memoryksm).
    type: str
    default: /usr/lib64/libksm_preload.so
  merge_threshold:
    description:
      - When set, the service also gets C(KSMP_MERGE_THRESHOLD=<merge_threshold>) (read by
        C(libksm_preload.so)). Not used by O(method=memoryksm).
    type: int
  init_dir:
    description:
      - Directory of the SysV init scripts.
    type: path
    default: /etc/init.d
  envfile_dirs:
    description:
      - Directories of environment files sourced by init scripts, in order of preference.
    type: list
    elements: path
    default: [/etc/sysconfig, /etc/default]
  systemd_dir:
    description:
      - Directory where the drop-in directory C(<service>.service.d) is written.
    type: path
    default: /etc/systemd/system
  unit_dirs:
    description:
      - Directories searched for the unit file and its drop-ins, highest priority first.
    type: list
    elements: path
    default: [/etc/systemd/system, /run/systemd/system, /usr/lib/systemd/system, /lib/systemd/system]
  dropin_name:
    description:
      - File name of the drop-in (must end in C(.conf)). Drop-ins are applied in lexical order;
        a drop-in sorting after this name that sets C(LD_PRELOAD) overrides it (the module warns).
    type: str
    default: samepage-ksm.conf
  backup:
    description:
      - Keep a timestamped copy of each file before it is changed or removed.
    type: bool
    default: false
notes:
  - The service is not restarted; RV(restart_needed) says whether its startup changed, and
    RV(daemon_reload_needed) whether C(systemctl daemon-reload) is needed first. Use handlers.
  - A block already present is updated where it stands; it is not moved.
  - Variables from a unit's C(EnvironmentFile=) override C(Environment=); a C(LD_PRELOAD) set there
    is not read.
seealso:
  - module: samepage.ksm.ksm_sysfs
  - name: ksm_preload
    description: The library that opts unmodified programs into KSM.
    link: http://vleu.net/ksm_preload/
  - name: systemd.exec MemoryKSM=
    description: systemd's per-service KSM switch (systemd 254 and later).
    link: https://www.freedesktop.org/software/systemd/man/latest/systemd.exec.html#MemoryKSM=
'''

EXAMPLES = r'''
- name: Preload libksm_preload.so into MySQL, however it starts
  samepage.ksm.ld_preload:
    service: mysql
  register: mysql_preload
  notify: Restart mysql

- name: Edit the init script itself (the OpenVZ wiki's way)
  samepage.ksm.ld_preload:
    service: mysql
    method: sysv
    library: /usr/lib64/libksm_preload.so
    merge_threshold: 4096

- name: Put it in /etc/sysconfig/httpd, which the init script sources
  samepage.ksm.ld_preload:
    service: httpd
    method: envfile

- name: Reload systemd when a drop-in changed
  ansible.builtin.systemd_service:
    daemon_reload: true
  when: mysql_preload.daemon_reload_needed

- name: Remove everything the module added for the service
  samepage.ksm.ld_preload:
    service: mysql
    state: absent
'''

RETURN = r'''
method:
  description: The method used (the one V(auto) picked). With O(state=absent) and O(method=auto), the
    method of the first artefact removed, else the one the service would use, else V(auto).
  returned: always
  type: str
  sample: sysv
path:
  description: The file edited (or that would be edited); V(null) when there was none.
  returned: always
  type: str
  sample: /etc/init.d/mysql
files:
  description: Every file written or removed (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/etc/init.d/mysql]
position:
  description: Where a new SysV block went, V(path) (after the PATH line), V(fallback) (after the
    header comments) or V(after-ld-preload) (after the script's own LD_PRELOAD line).
  returned: when a SysV block is inserted
  type: str
  sample: path
restart_needed:
  description: Whether the service's startup changed, so that a restart applies it.
  returned: always
  type: bool
  sample: true
daemon_reload_needed:
  description: Whether a systemd drop-in changed, so that C(systemctl daemon-reload) is needed.
  returned: always
  type: bool
  sample: false
ld_preload:
  description:
    - The resulting C(LD_PRELOAD) value as far as it is known from the files (a script's own value is
      known when it assigns a literal). With O(method=memoryksm) the value the unit already had.
    - V(null) when nothing sets it.
  returned: always
  type: str
  sample: /opt/other.so /usr/lib64/libksm_preload.so
backup_file:
  description: The last backup made, when O(backup=true) and a file changed.
  returned: when a backup was made
  type: str
  sample: /etc/init.d/mysql.12345.2026-11-27@10:00:00~
'''

import os
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.samepage.ksm.plugins.module_utils._fileedit import (
    BlockError, encode, file_diff, read_text, remove_file, write_atomic)
from ansible_collections.samepage.ksm.plugins.module_utils._ld_preload import (
    CREATED_FILE, DROPIN_CREATED_DIR, MEMORYKSM_KERNEL, MEMORYKSM_SYSTEMD, LdPreloadError,
    effective_variable, environment_events, is_our_dropin, mentions_preload, merge_preload,
    our_block_body, parse_kernel_release, parse_systemd_version, put_block, remove_our_block,
    render, render_dropin, script_offset, shell_block_body, simple_assignments, sourced_files,
    unit_names, validate_dropin_name, validate_library, validate_service)

SHELLS = ('sh', 'bash', 'dash', 'ksh', 'mksh', 'zsh', 'ash')
C_LOCALE = {'LANG': 'C', 'LC_ALL': 'C', 'LC_MESSAGES': 'C'}


# Version probes: module-level so that tests replace them; each runs only when method=auto needs it.
def kernel_release():
    return os.uname()[2]


def systemd_version(module):
    systemctl = module.get_bin_path('systemctl')
    if systemctl is None:
        return None
    rc, out, err = module.run_command([systemctl, '--version'], environ_update=C_LOCALE)
    if rc != 0:
        return None
    return parse_systemd_version(out)


class Target(object):
    """What was found on the host for one service."""

    def __init__(self, params, base):
        self.base = base
        self.unit_dirs = params['unit_dirs']
        self.script = os.path.join(params['init_dir'], base)
        self.script_text = read_text(self.script) if os.path.isfile(self.script) else None
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


class Planner(object):
    """Decide: read the state, validate all input and compute every file operation."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.warnings = []
        self.ops = []
        self.result = dict(changed=False, method=self.params['method'], path=None, files=[],
                           restart_needed=False, daemon_reload_needed=False, ld_preload=None)

    # -- validation -------------------------------------------------------------------------
    def validate(self):
        params = self.params
        self.base = validate_service(params['service'])
        self.library = validate_library(params['library'])
        validate_dropin_name(params['dropin_name'])
        threshold = params['merge_threshold']
        if threshold is not None and threshold < 0:
            raise LdPreloadError('merge_threshold must be 0 or a positive integer, got %d' % threshold)
        for option in ('envfile_dirs', 'unit_dirs'):
            if not params[option]:
                raise LdPreloadError('%s must list at least one directory' % option)
            for directory in params[option]:
                if not os.path.isabs(directory):
                    raise LdPreloadError('%s entry %r must be an absolute path' % (option, directory))
        for option in ('init_dir', 'systemd_dir'):
            if not os.path.isabs(params[option]):
                raise LdPreloadError('%s %r must be an absolute path' % (option, params[option]))

    # -- helpers ----------------------------------------------------------------------------
    def shell_for(self, script_text):
        first = (script_text or '').split('\n', 1)[0]
        match = re.match(r'#!\s*(\S+)(?:\s+(\S+))?', first)
        if match:
            interpreter = match.group(1)
            if os.path.basename(interpreter) == 'env' and match.group(2):
                interpreter = match.group(2)
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
        error = self.syntax_error(shell, after)
        if error is None:
            return
        if before is not None and self.syntax_error(shell, before) is not None:
            raise LdPreloadError('%s already fails "%s -n" as it is (%s); fix it by hand first, nothing was '
                                 'written' % (path, shell, error))
        raise LdPreloadError('%s would fail "%s -n" after the edit (%s); nothing was written. Use another '
                             'method (systemd, envfile) or edit the file by hand' % (path, shell, error))

    def add(self, method, path, before, after, mode=None, mkdir=None, rmdir=None):
        if before == after:
            return
        self.ops.append(dict(method=method, path=path, before=before, after=after, mode=mode,
                             mkdir=mkdir, rmdir=rmdir))

    def unknown(self, what):
        raise LdPreloadError('service %r: %s; looked for: %s' % (
            self.params['service'], what, ', '.join(self.looked)))

    # -- present ----------------------------------------------------------------------------
    def pick(self, target):
        if target.unit_file is not None:
            release = parse_kernel_release(kernel_release())
            if release is not None and release >= MEMORYKSM_KERNEL:
                version = systemd_version(self.module)
                if version is not None and version >= MEMORYKSM_SYSTEMD:
                    return 'memoryksm'
            return 'systemd'
        if target.script_text is not None:
            return 'sysv'
        self.unknown('no systemd unit and no SysV init script found')

    def present(self, target):
        method = self.params['method']
        if method == 'auto':
            method = self.pick(target)
        self.result['method'] = method
        if method != 'memoryksm' and not os.path.exists(self.library):
            self.warnings.append('library %s does not exist on this host (yet); until it does, the dynamic '
                                 'loader prints an error and starts the service without it' % self.library)
        if method in ('systemd', 'memoryksm'):
            self.present_dropin(target, method)
        elif method == 'sysv':
            self.present_sysv(target)
        else:
            self.present_envfile(target)

    def present_dropin(self, target, method):
        params = self.params
        if target.unit_file is None:
            self.unknown('no systemd unit found (method=%s needs one)' % method)
        if target.masked:
            raise LdPreloadError('unit %s is masked (a link to /dev/null); unmask it first' % target.unit_file)
        if not os.path.isdir(params['systemd_dir']):
            raise LdPreloadError('systemd_dir %s is not a directory' % params['systemd_dir'])
        events = environment_events(read_text(target.unit_file) or '')
        for name, path in target.other_dropins(params['dropin_name']):
            dropin_events = environment_events(read_text(path) or '')
            events.extend(dropin_events)
            if name > params['dropin_name'] and any(e is None or 'LD_PRELOAD' in e for e in dropin_events):
                self.warnings.append('%s sorts after %s and sets or resets LD_PRELOAD, which overrides ours; '
                                     'choose a dropin_name that sorts later' % (path, params['dropin_name']))
        existing = effective_variable(events, 'LD_PRELOAD')
        before = read_text(target.dropin)
        if before is not None and not is_our_dropin(before):
            raise LdPreloadError('%s exists and is not managed by samepage.ksm (its first line is not %r); '
                                 'choose another dropin_name' % (target.dropin, before.splitlines()[:1]))
        if before is None:
            created_dir = not os.path.isdir(target.dropin_dir)
        else:
            created_dir = DROPIN_CREATED_DIR in before.splitlines()
        if method == 'memoryksm':
            preload = existing
            if params['merge_threshold'] is not None:
                self.warnings.append('merge_threshold is not used by method=memoryksm')
        else:
            preload = merge_preload(existing, self.library)
        after = render_dropin(method, preload, params['merge_threshold'], created_dir)
        self.result.update(path=target.dropin, ld_preload=preload)
        mkdir = target.dropin_dir if not os.path.isdir(target.dropin_dir) else None
        self.add(method, target.dropin, before, after, mode=0o644, mkdir=mkdir)

    def present_sysv(self, target):
        if target.script_text is None:
            self.unknown('no SysV init script found (method=sysv needs one)')
        before = target.script_text
        outside = remove_our_block(before)
        append = mentions_preload(outside)
        offset, rule = script_offset(outside)
        after = put_block(before, render(shell_block_body(self.library, self.params['merge_threshold'], append)),
                          offset)
        self.result.update(path=target.script, ld_preload=self.static_preload(outside, append))
        for sourced in sourced_files(outside):
            if os.path.isfile(sourced) and mentions_preload(remove_our_block(read_text(sourced))):
                self.warnings.append('%s, which the script sources, sets LD_PRELOAD too and may override the '
                                     'block; method=envfile appends to it there instead' % sourced)
        if after != before:
            if our_block_body(before) is None:
                self.result['position'] = rule
            self.check_shell(target.script, self.shell_for(before), before, after)
        self.add('sysv', target.script, before, after)

    def static_preload(self, outside, append):
        if not append:
            return self.library
        return merge_preload(simple_assignments(outside).get('LD_PRELOAD'), self.library)

    def envfile_path(self, target):
        dirs = [os.path.normpath(d) for d in self.params['envfile_dirs']]
        if target.script_text is not None:
            sourced = sourced_files(target.script_text)
            for directory in dirs:
                for path in sourced:
                    if os.path.dirname(path) == directory:
                        return path
            raise LdPreloadError(
                'init script %s does not source an environment file in %s (it sources: %s); use method=sysv '
                'to edit the script itself' % (target.script, ', '.join(dirs), ', '.join(sourced) or 'nothing'))
        candidates = [os.path.join(d, self.base) for d in dirs]
        for path in candidates:
            if os.path.isfile(path):
                return path
        self.looked.extend(candidates)
        self.unknown('no SysV init script and no existing environment file found')

    def present_envfile(self, target):
        path = self.envfile_path(target)
        before = read_text(path)
        if before is None and not os.path.isdir(os.path.dirname(path)):
            raise LdPreloadError('cannot create %s: directory %s does not exist' % (path, os.path.dirname(path)))
        outside = remove_our_block(before) or ''
        created = before is None or CREATED_FILE in (our_block_body(before) or [])
        script_outside = remove_our_block(target.script_text) if target.script_text is not None else ''
        append = mentions_preload(outside) or mentions_preload(script_outside)
        body = shell_block_body(self.library, self.params['merge_threshold'], append, created_file=created)
        after = put_block(before or '', render(body), len(outside))
        self.result.update(path=path, ld_preload=self.static_preload(outside + script_outside, append))
        if after != before:
            self.check_shell(path, self.shell_for(target.script_text), before, after)
        self.add('envfile', path, before, after, mode=0o644 if before is None else None)

    # -- absent -----------------------------------------------------------------------------
    def absent(self, target):
        method = self.params['method']
        if method in ('auto', 'systemd', 'memoryksm'):
            self.absent_dropin(target, 'systemd' if method == 'auto' else method)
        if method in ('auto', 'sysv') and target.script_text is not None:
            before = target.script_text
            after = remove_our_block(before)
            if after != before:
                self.check_shell(target.script, self.shell_for(before), before, after)
            self.result['path'] = self.result['path'] or target.script
            self.add('sysv', target.script, before, after)
        if method in ('auto', 'envfile'):
            for path in self.envfile_candidates(target):
                before = read_text(path)
                if our_block_body(before) is None:
                    continue
                after = remove_our_block(before)
                if CREATED_FILE in our_block_body(before) and after == '':
                    after = None
                self.result['path'] = self.result['path'] or path
                self.add('envfile', path, before, after)
        if self.ops:
            self.result['method'] = self.ops[0]['method']
            self.result['path'] = self.ops[0]['path']
        elif method == 'auto':
            if target.unit_file is not None:
                self.result['method'] = 'systemd'
            elif target.script_text is not None:
                self.result['method'] = 'sysv'

    def absent_dropin(self, target, method):
        before = read_text(target.dropin)
        if before is None:
            return
        if not is_our_dropin(before):
            self.warnings.append('%s is not managed by samepage.ksm; left in place' % target.dropin)
            return
        rmdir = None
        if DROPIN_CREATED_DIR in before.splitlines() and os.listdir(target.dropin_dir) == [self.params['dropin_name']]:
            rmdir = target.dropin_dir
        self.result['path'] = target.dropin
        self.add(method, target.dropin, before, None, rmdir=rmdir)

    def envfile_candidates(self, target):
        dirs = [os.path.normpath(d) for d in self.params['envfile_dirs']]
        paths = [os.path.join(d, self.base) for d in dirs]
        if target.script_text is not None:
            paths.extend(p for p in sourced_files(target.script_text) if os.path.dirname(p) in dirs)
        unique = []
        for path in paths:
            if path not in unique and os.path.isfile(path):
                unique.append(path)
        return unique

    # -- entry ------------------------------------------------------------------------------
    def plan(self):
        self.validate()
        target = Target(self.params, self.base)
        self.looked = list(target.looked)
        if self.params['state'] == 'present':
            self.present(target)
        else:
            self.absent(target)
        self.result['files'] = [op['path'] for op in self.ops]
        self.result['changed'] = bool(self.ops)
        self.result['restart_needed'] = bool(self.ops)
        self.result['daemon_reload_needed'] = any(op['method'] in ('systemd', 'memoryksm') for op in self.ops)
        return self.ops


def apply(module, ops):
    """Act: write or remove every planned file (never called in check mode)."""
    backup_file = None
    for op in ops:
        if op['mkdir'] is not None:
            os.mkdir(op['mkdir'])
            os.chmod(op['mkdir'], 0o755)
        if op['after'] is not None:
            made = write_atomic(module, op['path'], op['after'], mode=op['mode'], backup=module.params['backup'])
            backup_file = made or backup_file
        else:
            if module.params['backup']:
                backup_file = module.backup_local(op['path']) or backup_file
            remove_file(op['path'])
            if op['rmdir'] is not None:
                try:
                    os.rmdir(op['rmdir'])
                except OSError:
                    module.warn('%s is not empty any more; left in place' % op['rmdir'])
    return backup_file


def main():
    module = AnsibleModule(
        argument_spec=dict(
            service=dict(type='str', required=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            method=dict(type='str', default='auto', choices=['auto', 'sysv', 'envfile', 'systemd', 'memoryksm']),
            library=dict(type='str', default='/usr/lib64/libksm_preload.so'),
            merge_threshold=dict(type='int'),
            init_dir=dict(type='path', default='/etc/init.d'),
            envfile_dirs=dict(type='list', elements='path', default=['/etc/sysconfig', '/etc/default']),
            systemd_dir=dict(type='path', default='/etc/systemd/system'),
            unit_dirs=dict(type='list', elements='path', default=[
                '/etc/systemd/system', '/run/systemd/system', '/usr/lib/systemd/system', '/lib/systemd/system']),
            dropin_name=dict(type='str', default='samepage-ksm.conf'),
            backup=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    planner = Planner(module)
    try:
        ops = planner.plan()
    except (LdPreloadError, BlockError) as exc:
        module.fail_json(msg=str(exc), **planner.result)
    result = planner.result
    if module._diff:
        diffs = [file_diff(op['path'], op['before'], op['after']) for op in ops]
        if not diffs and result['path']:
            current = read_text(result['path'])
            diffs = [file_diff(result['path'], current, current)]
        result['diff'] = diffs[0] if len(diffs) == 1 else diffs
    for warning in planner.warnings:
        module.warn(warning)
    if ops and not module.check_mode:
        backup_file = apply(module, ops)
        if backup_file:
            result['backup_file'] = backup_file
    module.exit_json(**result)


if __name__ == '__main__':
    main()
