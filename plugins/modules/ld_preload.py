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
short_description: Make a service start opted into KSM - LD_PRELOAD library, MemoryKSM or a prctl launcher
version_added: 1.0.0
description:
  - Finds how a service starts and edits exactly that, idempotently, so that its processes start
    with O(library) in C(LD_PRELOAD) (for example C(libksm_preload.so), which opts a process into
    KSM), with systemd's C(MemoryKSM=yes), or under a launcher that sets C(PR_SET_MEMORY_MERGE).
  - "B(Never reports success for a start that will not get it.) The init script is read for start paths
    that drop or replace the environment: C(env -i), C(su -)/C(su -l), C(runuser -l), C(sudo),
    C(daemon --user) when the init functions' C(daemon) starts a login shell, C(start-stop-daemon --chuid)
    through a login shell, and any later C(LD_PRELOAD=) or C(unset LD_PRELOAD) (inside an C(if), a function,
    or C(export LD_PRELOAD=$(...))). Such a script is refused with the file, the line and the method that works
    (C(prctl), C(memoryksm)/C(systemd) where systemd runs, or C(envfile) with the file that the command itself
    reads), and nothing is written. One start path is understood: Debian's apache2 runs C(env -i ... apache2ctl),
    and C(apache2ctl) reads C(envvars) next to O(init_dir) (C(/etc/apache2/envvars), C(/etc/apache2-NAME/envvars)
    for C(apache2-NAME)); O(method=auto) and O(method=envfile) put the setting there."
  - "O(method=sysv): a managed block C(# BEGIN samepage.ksm LD_PRELOAD <name>) in the SysV init script
    C(<init_dir>/<name>) that sets and exports C(LD_PRELOAD). It goes right after the script's first top-level
    C(PATH) assignment (after its C(export PATH) when that follows, also for C(PATH=...; export PATH) on one line
    and C(export PATH=...)). Without such a line it goes after the shebang, the LSB header and all leading comment
    and blank lines, before the first command. When the script itself assigns C(LD_PRELOAD) at top level further
    down, the block goes after that line so that the script's value is kept."
  - "O(method=envfile): the same block in the service's B(own) environment file that the init script sources:
    C(<dir>/<name>), then C(<dir>/$NAME) when the script assigns C(NAME) a literal, for each dir of O(envfile_dirs).
    A file that another init script in O(init_dir) also sources (Debian's C(/etc/default/samba) is read by
    C(smbd), C(nmbd) and C(samba-ad-dc)) or a system-wide one (C(rcS), C(locale), C(network), C(init),
    C(functions), ...) is refused unless O(envfile) names it explicitly. Blocks carry the service's name, so two
    services can each keep their own block in a file they share, and O(state=absent) removes only its own.
    The file is created (mode C(0644)) when missing. Without an init script an existing C(<dir>/<name>) is edited."
  - "O(method=systemd): a drop-in C(<systemd_dir>/<name>.service.d/<dropin_name>) with
    C(Environment=\"LD_PRELOAD=...\"). Any C(LD_PRELOAD) the unit or its other drop-ins already set is kept first;
    the library is added once."
  - "O(method=memoryksm): a drop-in with C(MemoryKSM=yes); systemd then opts the service's processes into KSM and
    no library is needed. Only where a transient unit with C(MemoryKSM=yes) really starts and gets
    C(ksm_merge_any: yes) (see M(samepage.ksm.ksm_optin_info)); otherwise the module fails and writes nothing
    (systemd 254 and 255 fail every such unit, older versions ignore the key)."
  - "O(method=prctl): a block C(# BEGIN samepage.ksm PRCTL <name>) at the top of the SysV init script (before
    its first command) re-executes the script once under O(launcher), which sets C(PR_SET_MEMORY_MERGE) and execs.
    The flag is a process attribute inherited across fork and exec (Linux 6.4 and later), so it reaches the daemon
    whatever the start path does to the environment (C(env -i), C(su -)). Refused for a service that systemd
    starts (wrapping C(ExecStart=) is not done: use C(memoryksm) or C(systemd))."
  - "O(method=auto): an artefact of this module already there keeps its method (sticky: an OS upgrade alone
    changes nothing). Otherwise, when systemd is the running init (C(/run/systemd/system) exists) and the unit
    exists: C(memoryksm) if the transient-unit probe proves it works, else C(systemd); else an init script gives
    C(sysv) (or C(envfile) into the file that survives C(env -i), see above); else the module fails and lists every
    path it looked at. Unit files alone (Debian ships them in C(/lib/systemd/system) on SysV hosts too) do not make
    a host systemd."
  - Entries already in C(LD_PRELOAD) are kept and never duplicated.
  - Every edited script and env file must pass C(sh -n) (the shell of the script's shebang when it is a known
    shell, C(/bin/sh) otherwise) before it replaces the original; otherwise the module fails and writes nothing.
    Mode and owner of edited files are kept; bytes outside the block are kept byte for byte (also bytes that are
    not UTF-8; the diff shows them as C(\\xNN)).
  - O(state=absent) removes exactly what this module added (its named blocks, the unnamed block of older
    releases in the service's own files, or its drop-in file and the C(.service.d) directory when this module
    created it and it is left empty).
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
  name:
    description:
      - Name of the service, for example C(mysql) or C(mysqld.service).
      - "Accepted: letters, digits and C(_), C(.), C(@), C(:), C(-); no C(/), no C(..), no leading C(-), no
        whitespace or newline. A C(.service) suffix is stripped; C(name@instance) also reads the template
        C(name@.service)."
    type: str
    required: true
    aliases: [service]
  state:
    description:
      - V(present) makes the service start opted in; V(absent) removes what this module added.
      - With V(absent) and O(method=auto), every artefact of this module for the service (drop-in,
        init script blocks, env file blocks) is removed.
    type: str
    choices: [present, absent]
    default: present
  method:
    description:
      - How the service is configured; see the description. V(auto) picks the best one proven on the host.
    type: str
    choices: [auto, sysv, envfile, systemd, memoryksm, prctl]
    default: auto
  library:
    description:
      - Absolute path of the library to preload. With O(state=present) and a method that uses it
        (V(sysv), V(envfile), V(systemd)) it must be an existing regular file; in check mode a missing one
        is a warning only (an earlier task of the same play would install it).
      - "Accepted: letters, digits and C(_), C(.), C(+), C(,), C(=), C(@), C(%), C(-), C(/); no whitespace,
        newline, quotes, C($), C(:), backslash or glob characters; a normalized path; not C(/)."
    type: str
    default: /usr/lib64/libksm_preload.so
  merge_threshold:
    description:
      - When set, the service also gets C(KSMP_MERGE_THRESHOLD=<merge_threshold>) (read by
        C(libksm_preload.so)). Not used by O(method=memoryksm) and O(method=prctl).
      - "Accepted: a whole number from 0 to 2147483647, as an integer or a string of ASCII digits (not a
        boolean, a float or other digits such as C(²))."
    type: raw
  launcher:
    description:
      - The launcher that O(method=prctl) runs the init script under (C(samepage-ksm-merge CMD ARGS...),
        installed by the container role). Must be an existing executable regular file; in check mode a missing one is a warning.
    type: str
    default: /usr/local/sbin/samepage-ksm-merge
  envfile:
    description:
      - With O(method=envfile), the environment file to edit, named explicitly. The checks that refuse files
        shared with other services or system-wide files are then skipped; the named block keeps each service's
        settings apart.
    type: str
  init_dir:
    description:
      - Directory of the SysV init scripts. Its parent is where C(apache2/envvars) is looked for.
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
      - Directory where the drop-in directory C(<name>.service.d) is written.
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
  - All files of one run are changed together or not at all; an error names the file and says what was left.
seealso:
  - module: samepage.ksm.ksm_optin_info
  - module: samepage.ksm.ksm_sysfs
  - name: ksm_preload
    description: The library that opts unmodified programs into KSM.
    link: http://vleu.net/ksm_preload/
  - name: systemd.exec MemoryKSM=
    description: systemd's per-service KSM switch (systemd 254 and later; works from 256).
    link: https://www.freedesktop.org/software/systemd/man/latest/systemd.exec.html#MemoryKSM=
'''

EXAMPLES = r'''
- name: Preload libksm_preload.so into MySQL, however it starts
  samepage.ksm.ld_preload:
    name: mysql
  register: mysql_preload
  notify: Restart mysql

- name: Edit the init script itself (the OpenVZ wiki's way)
  samepage.ksm.ld_preload:
    name: mysql
    method: sysv
    library: /usr/lib64/libksm_preload.so
    merge_threshold: 4096

- name: Put it in /etc/sysconfig/httpd, which the init script sources
  samepage.ksm.ld_preload:
    name: httpd
    method: envfile

- name: smbd and nmbd share /etc/default/samba; each keeps its own named block there
  samepage.ksm.ld_preload:
    name: "{{ item }}"
    method: envfile
    envfile: /etc/default/samba
  loop: [smbd, nmbd]

- name: Whole-process opt-in for Apache under the prctl launcher (survives its env -i)
  samepage.ksm.ld_preload:
    name: apache2
    method: prctl

- name: Reload systemd when a drop-in changed
  ansible.builtin.systemd_service:
    daemon_reload: true
  when: mysql_preload.daemon_reload_needed

- name: Remove everything the module added for the service
  samepage.ksm.ld_preload:
    name: mysql
    state: absent
'''

RETURN = r'''
method:
  description: The method used (the one V(auto) picked; V(envfile) when the setting went into the file that
    survives an C(env -i)). With O(state=absent) and O(method=auto), the method of the first artefact removed,
    else the one the service would use, else V(auto).
  returned: always
  type: str
  sample: sysv
reason:
  description: Why V(auto) chose the method (the MemoryKSM probe's answer, a kept artefact, ...); V(null) otherwise.
  returned: always
  type: str
  sample: "systemd is not the running init: the SysV init script starts the service"
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
  returned: when a SysV LD_PRELOAD block is inserted
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
    - V(null) when nothing sets it, and with O(method=prctl).
  returned: always
  type: str
  sample: /opt/other.so /usr/lib64/libksm_preload.so
diff:
  description: One diff per file changed (the whole file before and after), as a list.
  returned: when diff mode is on
  type: list
  elements: dict
backups:
  description: Backup file of each changed or removed file, when O(backup=true).
  returned: when files were changed (not in check mode)
  type: dict
  sample: {/etc/init.d/mysql: /etc/init.d/mysql.12345.2026-11-27@10:00:00~}
backup_file:
  description: The last backup made, when O(backup=true) and a file changed.
  returned: when a backup was made
  type: str
  sample: /etc/init.d/mysql.12345.2026-11-27@10:00:00~
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.samepage.ksm.plugins.module_utils._fileedit import BlockError
from ansible_collections.samepage.ksm.plugins.module_utils._fileplan import FilePlan, FilePlanError, printable
from ansible_collections.samepage.ksm.plugins.module_utils._ld_preload import LdPreloadError
from ansible_collections.samepage.ksm.plugins.module_utils._ld_preload_plan import LAUNCHER, LIBRARY, Planner, location_spec

METHODS = ['auto', 'sysv', 'envfile', 'systemd', 'memoryksm', 'prctl']


def argument_spec():
    spec = dict(
        name=dict(type='str', required=True, aliases=['service']),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        method=dict(type='str', default='auto', choices=METHODS),
        library=dict(type='str', default=LIBRARY),
        merge_threshold=dict(type='raw'),
        launcher=dict(type='str', default=LAUNCHER),
        envfile=dict(type='str'),
        backup=dict(type='bool', default=False),
    )
    spec.update(location_spec())
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    plan = FilePlan(module)
    planner = Planner(module, plan)
    try:
        planner.plan_all()
    except (LdPreloadError, BlockError, FilePlanError) as exc:
        module.fail_json(msg=str(exc), **planner.result)
    result = planner.result
    if module._diff:
        diffs = plan.diff()
        if not diffs and result['path']:
            current = printable(plan.read(result['path'])) or ''
            diffs = [dict(before_header=result['path'], after_header=result['path'], before=current, after=current)]
        result['diff'] = diffs
    for warning in planner.warnings:
        module.warn(warning)
    if plan.changed and not module.check_mode:
        try:
            done = plan.apply()
        except FilePlanError as exc:
            module.fail_json(msg=str(exc), **result)
        for warning in plan.warnings:
            module.warn(warning)
        result['backups'] = done['backups']
        if done['backups']:
            result['backup_file'] = list(done['backups'].values())[-1]
    module.exit_json(**result)


if __name__ == '__main__':
    main()
