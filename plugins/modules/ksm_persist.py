#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ksm_persist
short_description: Apply KSM (kernel same-page merging) knobs at every boot
version_added: 1.0.0
description:
  - Makes KSM knob values survive reboots, with one of three boot mechanisms (O(backend)).
    It only writes boot configuration; use M(samepage.ksm.ksm_sysfs) to set the running kernel.
  - V(rc_local) (the default) keeps one managed block, between the lines
    C(# BEGIN samepage.ksm managed block) and C(# END samepage.ksm managed block), in O(rc_local_path).
    The block writes the knobs when O(sysfs_path) exists, in the same safe order as M(samepage.ksm.ksm_sysfs)
    (C(advisor_mode) first, C(merge_across_nodes) and C(max_page_sharing) before C(run), C(run) last).
    Every line of the file outside the block is kept byte for byte.
  - Where the block goes. An existing block is updated in place. A new block goes right before the line of the
    script's final top-level C(exit) (the last command of the file, ignoring blank and comment lines after it,
    when it is an C(exit) outside any C(if), C(case), loop or function - Debian's C(exit 0), also C(exit 0;) or
    an indented C(exit 0)), because a block after it would never run. Otherwise it goes at the end of the file.
    Any other C(exit) is left alone; a top-level C(exit) with commands after it gives a warning, since the
    block may then never run.
  - >-
    A missing rc.local is created with C(#!/bin/sh) (not C(#!/bin/sh -e), which would stop at the first
    failing write) and mode C(0755), and its block then carries the line
    C(# created by samepage.ksm: remove the file with the block), kept on every update of the block,
    so that removing the block removes the file too (see O(state)). An existing rc.local is made
    executable when it is not, because systemd's C(rc-local.service) runs it only then; its block then
    records the old mode (C(# samepage.ksm: original mode 0644)), which removing the block puts back. When
    O(rc_local_path) is a symbolic link (EL's C(/etc/rc.local) to C(/etc/rc.d/rc.local)), the target is
    edited (or created) and the link kept.
  - V(systemd) writes C(samepage-ksm.service), a oneshot unit with C(ConditionPathExists=) O(sysfs_path),
    C(RemainAfterExit=yes), C(WantedBy=multi-user.target) and one C(ExecStart=) per knob in safe order.
    The module does not run C(systemctl); it returns RV(daemon_reload_needed) and the RV(units) to enable and start.
    M(samepage.ksm.ksm_sysfs) with O(samepage.ksm.ksm_sysfs#module:persist) writes the same files, sets the running
    kernel and manages the units in the same call.
  - V(tmpfiles) writes C(samepage-ksm.conf) in O(tmpfiles_dir) with one C(w) line per knob;
    systemd-tmpfiles applies the lines in the order they are listed (tmpfiles.d(5)) early at boot.
  - Boot boost, then relax. With O(boost), the knobs in O(boost) get those values at boot and their
    O(settings) values O(boost_seconds) later. rc.local starts a detached background step
    (C(setsid), or C(nohup) where C(setsid) is missing) that sleeps and then writes; the systemd backend
    adds C(samepage-ksm-relax.timer) (C(OnBootSec=) O(boost_seconds)) and C(samepage-ksm-relax.service).
    tmpfiles.d cannot delay a write, so O(boost) with O(backend=tmpfiles) is an error.
  - With O(state=present), what the other backends of this module left is removed (switching backend).
    With O(state=absent), every backend's artefacts of this module are removed, and only those
    (the managed block, an rc.local file that this module created, and our unit and tmpfiles files
    with their C(.wants) links).
  - Every option is validated, and every file read and planned, before anything is written;
    on any error nothing is written. The files are then changed as a whole - new backend first, the old
    one removed after - and when one cannot be written (ENOSPC, EROFS, ...) the ones already changed are
    put back and the error names the file and says that the old configuration stays.
author:
  - samepage.ksm maintainers (@samepage)
extends_documentation_fragment:
  - samepage.ksm._attributes
  - samepage.ksm._attributes.platform
  - samepage.ksm._attributes.files
  - samepage.ksm._knobs
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - One diff per file that is created, changed or removed, with the whole file before and after.
  platform:
    platforms: linux
  safe_file_operations:
    support: full
options:
  state:
    description:
      - V(present) writes the boot configuration of O(backend) and removes the other backends' artefacts.
      - V(absent) removes the artefacts of every backend.
      - When the rc.local block is removed (with V(absent), or with V(present) and another O(backend)),
        an rc.local that this module created (its block says so) is removed as a whole when only the
        C(#!/bin/sh) line that the module wrote is left in it. Otherwise the file is kept without the block;
        an rc.local that predates the block is never removed, and neither is one with lines added by others.
        When O(rc_local_path) is a symbolic link, only the target is ever removed, never the link.
    type: str
    choices: [present, absent]
    default: present
  backend:
    description:
      - How the knobs are applied at boot. Ignored with O(state=absent).
    type: str
    choices: [rc_local, systemd, tmpfiles]
    default: rc_local
  settings:
    description:
      - Knob name to value, for example C(run) set to V(1) and C(sleep_millisecs) to V(50).
      - Knobs are those of M(samepage.ksm.ksm_sysfs), with exactly the same accepted values (one normaliser).
      - Required, and not empty, with O(state=present).
    type: dict
  boost:
    description:
      - Knob name to value written at boot instead of the O(settings) value, for O(boost_seconds) seconds
        (for example C(pages_to_scan) V(5000) and C(sleep_millisecs) V(10), to merge fast while the host starts).
      - Every knob in O(boost) must also be in O(settings), which gives its value after the boost.
      - C(merge_across_nodes) and C(max_page_sharing) cannot be boosted (the kernel changes them only
        while nothing is merged).
      - Not possible with O(backend=tmpfiles).
    type: dict
  boost_seconds:
    description:
      - Seconds after boot when the O(boost) values are replaced by the O(settings) values. A whole number
        from V(1) to V(31536000) (one year; 32-bit C(sleep) and C(time_t) end at 2**31-1 seconds).
    type: raw
    default: 600
  sysfs_path:
    description:
      - The KSM sysfs directory that the boot configuration writes to (and checks for).
      - Letters, digits and C(. _ + - /) only, since it is written into shell, unit and tmpfiles lines.
    type: path
    default: /sys/kernel/mm/ksm
  rc_local_path:
    description:
      - The rc.local file (or the symbolic link to it).
    type: path
    default: /etc/rc.local
  systemd_dir:
    description:
      - Where the systemd unit files go.
    type: path
    default: /etc/systemd/system
  tmpfiles_dir:
    description:
      - Where the tmpfiles.d file goes.
    type: path
    default: /etc/tmpfiles.d
  backup:
    description:
      - Keep a timestamped copy of rc.local before changing or removing it. The unit and tmpfiles files are entirely
        generated by this module and are not backed up.
    type: bool
    default: false
notes:
  - The module never runs C(systemctl) or C(systemd-tmpfiles). With the systemd backend, run
    C(systemctl daemon-reload) when RV(daemon_reload_needed), then enable and start RV(units) in the
    order given (the timer after the service). On systemd hosts, rc.local runs through RV(rc_local_service),
    which systemd's rc-local generator adds to the boot when the file is executable.
  - A knob that the booted kernel lacks is skipped at boot with a message in the boot log, and the
    other knobs are still written.
seealso:
  - module: samepage.ksm.ksm_sysfs
  - name: Kernel Samepage Merging
    description: The kernel's documentation of every KSM knob.
    link: https://docs.kernel.org/admin-guide/mm/ksm.html
  - name: tmpfiles.d(5)
    description: The tmpfiles.d format, including the order in which lines are applied.
    link: https://www.freedesktop.org/software/systemd/man/latest/tmpfiles.d.html
'''

EXAMPLES = r'''
- name: Start ksmd at every boot, the rc.local way
  samepage.ksm.ksm_persist:
    settings:
      run: 1
      sleep_millisecs: 50

- name: Scan hard for 10 minutes after boot, then relax (systemd timer)
  samepage.ksm.ksm_persist:
    backend: systemd
    settings:
      run: 1
      pages_to_scan: 100
      sleep_millisecs: 50
    boost:
      pages_to_scan: 5000
      sleep_millisecs: 10
    boost_seconds: 600
  register: ksm_boot

- name: Load and start the units
  ansible.builtin.systemd_service:
    name: "{{ item }}"
    enabled: true
    state: started
    daemon_reload: "{{ ksm_boot.daemon_reload_needed }}"
  loop: "{{ ksm_boot.units }}"

- name: Remove every boot configuration of this collection
  samepage.ksm.ksm_persist:
    state: absent
'''

RETURN = r'''
backend:
  description: The backend in use; V(null) with O(state=absent).
  returned: always
  type: str
  sample: rc_local
files:
  description: Every file written or removed (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/etc/rc.local]
removed:
  description: The files (and C(.wants) links) removed, a subset of RV(files); rc.local is listed when the module had created it and removes it.
  returned: always
  type: list
  elements: str
  sample: [/etc/systemd/system/samepage-ksm.service]
daemon_reload_needed:
  description: Whether a systemd unit file was written or removed, so that C(systemctl daemon-reload) is due.
  returned: always
  type: bool
  sample: true
units:
  description: The units to enable and start, in that order (empty unless O(backend=systemd)).
  returned: always
  type: list
  elements: str
  sample: [samepage-ksm.service, samepage-ksm-relax.timer]
units_removed:
  description: Our units whose files were removed; stop them if they are still loaded.
  returned: always
  type: list
  elements: str
  sample: [samepage-ksm-relax.timer]
rc_local_service:
  description:
    - The systemd unit that runs rc.local at boot on systemd hosts, when the rc_local backend is in use.
    - systemd's rc-local generator adds it to the boot only when rc.local is executable (this module sees to that);
      the unit has no C([Install]) section on most distributions, so start it rather than enable it.
  returned: always
  type: str
  sample: rc-local.service
rc_local_target:
  description: The file edited for rc.local (the target of O(rc_local_path) when it is a symbolic link).
  returned: always
  type: str
  sample: /etc/rc.d/rc.local
backup_files:
  description: The backup copies made by O(backup), by file (empty when none was made).
  returned: always
  type: dict
  sample: {"/etc/rc.local": "/etc/rc.local.12345.2026-11-27@00:00:00~"}
settings:
  description: The knobs and values written at boot after any boost, as the kernel gets them.
  returned: always
  type: dict
  sample: {"run": "1", "sleep_millisecs": "50"}
boost:
  description: The knobs written at boot with their boost values (empty without O(boost)).
  returned: always
  type: dict
  sample: {"pages_to_scan": "5000"}
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.samepage.ksm.plugins.module_utils import _persist as persist
from ansible_collections.samepage.ksm.plugins.module_utils._fileedit import BlockError
from ansible_collections.samepage.ksm.plugins.module_utils._fileplan import FilePlan, FilePlanError
from ansible_collections.samepage.ksm.plugins.module_utils._ksm import parse_whole, settings_spec


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', default='present', choices=['present', 'absent']),
            backend=dict(type='str', default='rc_local', choices=list(persist.BACKENDS)),
            settings=settings_spec(),
            boost=settings_spec(),
            boost_seconds=dict(type='raw', default=600),
            sysfs_path=dict(type='path', default='/sys/kernel/mm/ksm'),
            rc_local_path=dict(type='path', default='/etc/rc.local'),
            systemd_dir=dict(type='path', default='/etc/systemd/system'),
            tmpfiles_dir=dict(type='path', default='/etc/tmpfiles.d'),
            backup=dict(type='bool', default=False),
        ),
        required_if=[('state', 'present', ('settings',))],
        supports_check_mode=True,
    )
    params = module.params
    state = params['state']
    backend = params['backend'] if state == 'present' else None
    sysfs_path = params['sysfs_path'].rstrip('/') or '/'
    settings = dict((k, v) for k, v in (params['settings'] or {}).items() if v is not None)
    boost = dict((k, v) for k, v in (params['boost'] or {}).items() if v is not None)
    seconds = parse_whole(params['boost_seconds'], 1, persist.BOOST_SECONDS_MAX)

    # Decide: every option, then every file's new content (ours written, the other backends removed).
    boot, relax, errors = persist.validate(
        state, params['backend'], settings, boost, seconds if seconds is not None else 600, sysfs_path)
    if seconds is None:
        errors.insert(0, 'boost_seconds: invalid value %r; expected a whole number of seconds from 1 to %d (an integer '
                      'or a string of ASCII digits)' % (params['boost_seconds'], persist.BOOST_SECONDS_MAX))
    plan = FilePlan(module)
    info = None
    if not errors:
        try:
            info = persist.plan_boot(plan, backend, boot, relax, seconds, sysfs_path, params['rc_local_path'],
                                     params['systemd_dir'], params['tmpfiles_dir'], backup=params['backup'])
        except (BlockError, FilePlanError) as exc:
            errors.append(str(exc))
    if errors:
        module.fail_json(msg='Invalid options, nothing was written: ' + '; '.join(errors), errors=errors)

    result = dict(
        changed=plan.changed,
        backend=backend,
        files=plan.files,
        removed=plan.removed,
        daemon_reload_needed=info['daemon_reload_needed'],
        units=info['units'],
        units_removed=info['units_removed'],
        rc_local_service=persist.RC_LOCAL_SERVICE if backend == 'rc_local' else None,
        rc_local_target=info['rc_local_target'],
        backup_files={},
        settings=dict(boot),
        boost=dict((name, value) for name, value in boot if name in dict(relax)),
    )
    result['settings'].update(relax)
    for warning in info['warnings']:
        module.warn(warning)
    if module._diff:
        result['diff'] = plan.diff()

    # Act: the whole change or none of it.
    if plan.changed and not module.check_mode:
        try:
            result['backup_files'] = plan.apply()['backups']
        except FilePlanError as exc:
            module.fail_json(msg=str(exc), **result)
        for warning in plan.warnings:
            module.warn(warning)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
