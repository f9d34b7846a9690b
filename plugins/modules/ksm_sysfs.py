#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ksm_sysfs
short_description: Set, persist and verify the kernel's KSM (kernel same-page merging) knobs in one call
version_added: 1.0.0
description:
  - Manages the knobs of the Linux KSM daemon C(ksmd) under C(/sys/kernel/mm/ksm) for the running kernel
    and, with O(persist), at every boot, then reads them back and fails unless the kernel holds them.
    It returns the same RV(ksm) dictionary as M(samepage.ksm.ksm_info), so one task per host does the
    whole job.
  - Why one module. Like C(ansible.posix.sysctl) (runtime value plus C(sysctl_file)) and
    C(community.general.modprobe) (load plus C(persistent)), the runtime change, its persistence and its
    verification belong together; each task costs a worker per host on the controller and a Python start on
    the host, so one round trip instead of four (preflight read, write, persist, verify) is also what makes a
    fleet converge fast.
  - "One call does, in this order: preflight (the KSM sysfs directory exists and is writable here; other KSM
    controllers per O(competing)); validate every option (nothing is written when anything is wrong); plan
    the runtime writes and the boot files; act (runtime knobs with rollback, then the boot files as one
    change that happens whole or not at all, then the systemd units, see O(manage_units)); read back and
    fail when the kernel does not hold the values."
  - Writes only knobs whose value differs, in a safe order. C(advisor_mode) is written before C(pages_to_scan),
    and C(pages_to_scan) is never written while the advisor is, or will be, C(scan-time) (the kernel answers
    EINVAL). C(run) is written last.
  - The kernel refuses to change C(merge_across_nodes) and C(max_page_sharing) while pages are merged (EBUSY).
    When one of them must change while pages are shared or C(ksmd) runs, the module unmerges every page
    (writes C(2) to C(run)), waits up to O(unmerge_timeout) seconds for C(pages_shared) to reach 0,
    writes the knob, then writes C(run) from O(settings), or else its previous value.
  - Before it unmerges (also for C(run=2) and O(state=absent)), the module checks that C(MemAvailable) can
    absorb the pages that unmerging copies back, and fails without writing anything unless O(force_unmerge=true).
  - When a runtime write fails part-way, the knobs already written are put back in reverse order and the module
    fails, naming the knob, the value and the kernel's error. When a boot file cannot be written, the files are
    put back and so are the knobs.
  - "Boot persistence (O(persist)): V(rc_local) keeps one managed block, between C(# BEGIN samepage.ksm managed
    block) and C(# END samepage.ksm managed block), in O(rc_local_path), right before the script's final
    top-level C(exit) (also C(exit 0;) or an indented one; an C(exit) inside C(if), C(case), a loop or a
    function is not final); V(systemd) writes C(samepage-ksm.service) (and, with O(boost),
    C(samepage-ksm-relax.timer) and its service) in O(systemd_dir); V(tmpfiles) writes C(samepage-ksm.conf)
    in O(tmpfiles_dir). Each backend removes the artefacts of the others (switching backend: the new one is
    written first, then the old one removed; on any error the old one stays). M(samepage.ksm.ksm_persist)
    documents the files in detail."
  - With O(state=absent) the module unmerges (memory-guarded), stops C(ksmd) (C(run=0)), with O(reset) puts
    the tuning knobs back to the kernel defaults, and removes every boot artefact of this collection. On a host
    without KSM it still removes those artefacts and succeeds.
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
    details:
      - Nothing is written and no C(systemctl) command that changes anything is run; RV(ksm) shows the knobs
        as they would be.
  diff_mode:
    support: full
    details:
      - A list of diffs, one shape for all, the knobs first (C(knob = value) lines, before and after), then one per
        boot file created, changed or removed (undecodable bytes shown as C(\xNN)).
  platform:
    platforms: linux
  safe_file_operations:
    support: full
options:
  settings:
    description:
      - "Knob name to value, for example C({run: 1, pages_to_scan: 1000, sleep_millisecs: 50})."
      - A name that is not a KSM knob fails. Whole numbers are integers or strings of ASCII digits (never floats,
        booleans or other digits); booleans are V(true)/V(false), V(yes)/V(no), V(on)/V(off), V(1)/V(0).
        M(samepage.ksm.ksm_persist) accepts exactly the same values.
      - Required with O(state=present). Ignored with O(state=absent).
    type: dict
  state:
    description:
      - V(present) applies O(settings) (and their persistence, see O(persist)).
      - V(absent) unmerges every page, stops C(ksmd), resets the tuning knobs (O(reset)) and removes every boot
        artefact of this collection (unless O(persist=keep)).
    type: str
    choices: [present, absent]
    default: present
  persist:
    description:
      - How the values survive a reboot.
      - V(keep) leaves the boot configuration alone. V(none) removes every boot artefact of this collection.
        V(rc_local), V(systemd) and V(tmpfiles) write that backend's files with O(settings) (and O(boost))
        and remove the other backends' files.
      - Default V(keep) with O(state=present) and V(none) with O(state=absent).
    type: str
    choices: [keep, rc_local, systemd, tmpfiles, none]
  boost:
    description:
      - Knob name to value written at boot instead of the O(settings) value, for O(boost_seconds) seconds
        (for example C(pages_to_scan=5000) and C(sleep_millisecs=20), to merge fast while the host fills up).
      - Every knob in O(boost) must also be in O(settings). Needs O(persist=rc_local) or O(persist=systemd).
      - The running kernel gets O(settings), not the boost (the boost is for the next boots).
    type: dict
  boost_seconds:
    description:
      - Seconds after boot when the O(boost) values give way to O(settings). A whole number from V(1) to
        V(31536000) (one year; 32-bit C(sleep) and C(time_t) end at 2**31-1 seconds, and a longer boost is a typo).
    type: raw
    default: 600
  reset:
    description:
      - With O(state=absent), also write the kernel defaults to every tuning knob that differs from them
        (C(advisor_mode=none), C(pages_to_scan=100), C(sleep_millisecs=20), ...), so that the running node
        matches what its next boot gives.
    type: bool
    default: true
  competing:
    description:
      - What to do about other KSM controllers found here (C(ksmtuned), EL's C(ksm.service), an active C(tuned)
        profile that writes KSM knobs, C(rc.local) lines outside our block), see RV(competing).
      - V(ignore) does not look; V(warn) warns; V(fail) fails before anything is written, except for the kinds
        in O(competing_allow) (warned about).
    type: str
    choices: [ignore, warn, fail]
    default: warn
  competing_allow:
    description:
      - Kinds of competing controllers that do not fail the task with O(competing=fail), for example
        V(service) when the caller stops and disables those services next (as the node role does).
    type: list
    elements: str
    choices: [service, process, tuned, rc_local]
    default: []
  manage_units:
    description:
      - On a host where systemd is the init system, after writing or removing unit files of ours, run
        C(systemctl daemon-reload), enable the new units (C(samepage-ksm.service), and C(samepage-ksm-relax.timer)
        with O(boost)), and stop the removed ones that are still active. Their C(.wants) links are part of the
        planned files. The units are enabled, not started (the module has already set the running kernel).
      - V(false) leaves that to the caller (RV(persist.units), RV(persist.daemon_reload_needed)).
    type: bool
    default: true
  strict:
    description:
      - What to do with a requested knob the running kernel lacks (older kernels have no C(advisor_*),
        C(smart_scan) or C(use_zero_pages); non-NUMA kernels have no C(merge_across_nodes)).
      - V(false) warns and skips it (it is still persisted); V(true) fails before anything is written.
    type: bool
    default: false
  verify_ksmd:
    description:
      - Fail when C(run) is 1 after the task but no C(ksmd) kernel thread is found. A kernel thread is
        invisible inside a PID namespace, so leave this off when the target is a container.
    type: bool
    default: false
  wait_full_scan:
    description:
      - After a change with C(run=1), wait until C(ksmd) completed a whole scan with the new values (the
        C(full_scans) counter grows by 2), up to O(wait_timeout) seconds, then fail if it did not.
      - C(ksmd) scans only while some process has mergeable memory.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds O(wait_full_scan) waits.
    type: int
    default: 300
  unmerge_timeout:
    description:
      - Seconds to wait, after unmerging, for C(pages_shared) to reach 0 before C(merge_across_nodes) or
        C(max_page_sharing) is written. On timeout the module rolls back and fails.
    type: int
    default: 60
  force_unmerge:
    description:
      - Unmerge even when C(MemAvailable) in O(meminfo_path) is smaller than the memory that unmerging
        copies back (C(pages_sharing) plus C(ksm_zero_pages), times the page size). This can push the host
        into swap or the OOM killer.
    type: bool
    default: false
  top_processes:
    description:
      - How many processes, highest KSM profit first, RV(ksm) lists in C(top_processes) (V(0) scans none).
    type: int
    default: 0
  sysfs_path:
    description:
      - Directory of the KSM knobs, also named in the boot files. Change it only to point at a copy of the tree,
        for tests. Letters, digits and C(. _ + - /) only.
    type: path
    default: /sys/kernel/mm/ksm
  proc_path:
    description:
      - Where procfs is mounted (C(ksmd), competing processes, top processes). Change it only for tests.
    type: path
    default: /proc
  meminfo_path:
    description:
      - File read for C(MemAvailable) before an unmerge. Change it only for tests.
    type: path
    default: /proc/meminfo
  rc_local_path:
    description:
      - The rc.local file of O(persist=rc_local) (a symbolic link, such as EL's C(/etc/rc.local), is followed
        and kept), also searched for foreign KSM lines (O(competing)).
    type: path
    default: /etc/rc.local
  systemd_dir:
    description:
      - Where the unit files of O(persist=systemd) go.
    type: path
    default: /etc/systemd/system
  tmpfiles_dir:
    description:
      - Where the file of O(persist=tmpfiles) goes.
    type: path
    default: /etc/tmpfiles.d
  backup:
    description:
      - Keep a timestamped copy of rc.local before changing or removing it (reported in RV(persist.backup_files)).
    type: bool
    default: false
notes:
  - Needs root (use O(ignore:become=true)). KSM state is global to the kernel; containers share the host's knobs
    and usually see C(/sys) read-only. Target the hardware node.
  - A knob that the booted kernel lacks is skipped at boot (logged), and the others are still written.
seealso:
  - module: samepage.ksm.ksm_info
  - module: samepage.ksm.ksm_persist
  - module: ansible.posix.sysctl
    description: The same design for sysctl values (runtime and file in one call).
  - name: Kernel Samepage Merging (kernel documentation)
    description: The meaning of every knob.
    link: https://docs.kernel.org/admin-guide/mm/ksm.html
'''

EXAMPLES = r'''
- name: Start ksmd tuned for a virtualisation host, now and at every boot (rc.local)
  samepage.ksm.ksm_sysfs:
    settings: {run: 1, pages_to_scan: 1000, sleep_millisecs: 50}
    persist: rc_local
  become: true

- name: Same with systemd units, scanning hard for 10 minutes after each boot
  samepage.ksm.ksm_sysfs:
    settings: {run: 1, pages_to_scan: 1000, sleep_millisecs: 50}
    persist: systemd
    boost: {pages_to_scan: 5000, sleep_millisecs: 20}
    boost_seconds: 600
    competing: fail
  become: true
  register: ksm

- name: Show the memory saved
  ansible.builtin.debug:
    msg: "{{ ksm.ksm.saved_mib }} MiB saved"

- name: Let the kernel tune the scan rate (pages_to_scan stays unset), fail on kernels before 6.8
  samepage.ksm.ksm_sysfs:
    settings:
      advisor_mode: scan-time
      advisor_max_cpu: 30
      run: 1
    strict: true
  become: true

- name: Keep merges inside NUMA nodes (unmerges first, then restores run), runtime only
  samepage.ksm.ksm_sysfs:
    settings: {merge_across_nodes: 0}
    unmerge_timeout: 120
  become: true

- name: KSM off, knobs back to the kernel defaults, every boot artefact of ours removed
  samepage.ksm.ksm_sysfs:
    state: absent
  become: true
'''

RETURN = r'''
ksm:
  description:
    - The KSM state after the task (in check mode, with the knobs as they would be), the same dictionary as
      RV(samepage.ksm.ksm_info#module:ksm) (C(available), C(knobs), C(counters), C(saved_mib), C(ksmd), ...).
  returned: always
  type: dict
  sample: {"available": true, "knobs": {"run": 1, "pages_to_scan": 1000}, "saved_mib": 63.75}
changes:
  description:
    - The knobs whose value changed (or would change, in check mode), in the order they were written.
    - The temporary V(2) written to C(run) for an unmerge is not listed; see RV(unmerged).
  returned: always
  type: list
  elements: dict
  contains:
    knob:
      description: Name of the knob.
      type: str
      sample: pages_to_scan
    before:
      description: Value before the task.
      type: raw
      sample: 100
    after:
      description: Value after the task.
      type: raw
      sample: 1000
  sample: [{"knob": "pages_to_scan", "before": 100, "after": 1000}]
skipped:
  description: Requested knobs the running kernel lacks, skipped with a warning (O(strict=false)).
  returned: always
  type: list
  elements: str
  sample: [merge_across_nodes]
unmerged:
  description: Whether every merged page was unmerged (in check mode, would be).
  returned: always
  type: bool
  sample: false
competing:
  description: Other KSM controllers found (empty with O(competing=ignore)).
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: V(service), V(process), V(tuned) or V(rc_local).
      type: str
    name:
      description: Service, process or tuned profile name, or the C(rc.local) path.
      type: str
    detail:
      description: What was found, for people.
      type: str
  sample: [{"kind": "service", "name": "ksmtuned", "detail": "systemd unit ksmtuned.service is enabled, active"}]
persist:
  description: What happened to the boot configuration.
  returned: always
  type: dict
  contains:
    backend:
      description: The backend written (V(null) when none is, with O(persist=none), O(persist=keep) or O(state=absent)).
      type: str
      sample: rc_local
    files:
      description: Every file written or removed (or that would be, in check mode).
      type: list
      elements: str
      sample: [/etc/rc.local, /etc/systemd/system/samepage-ksm.service]
    removed:
      description: The files and C(.wants) links removed, a subset of RV(persist.files).
      type: list
      elements: str
      sample: [/etc/systemd/system/samepage-ksm.service]
    units:
      description: Our systemd units of the backend in use (to be enabled).
      type: list
      elements: str
      sample: [samepage-ksm.service, samepage-ksm-relax.timer]
    units_enabled:
      description: Units this task enabled (or would enable) with C(systemctl enable).
      type: list
      elements: str
      sample: [samepage-ksm.service]
    units_removed:
      description: Our units whose files (or C(.wants) links) were removed.
      type: list
      elements: str
      sample: [samepage-ksm-relax.timer]
    units_stopped:
      description: Removed units that were still active and were stopped.
      type: list
      elements: str
      sample: []
    daemon_reload_needed:
      description: Whether a unit file was written or removed (the module ran C(systemctl daemon-reload) itself
        when O(manage_units) and systemd is the init).
      type: bool
      sample: true
    systemd:
      description: Whether systemd is the init system here (units are managed only then).
      type: bool
      sample: true
    rc_local_target:
      description: The file edited for rc.local (the target of O(rc_local_path) when it is a symbolic link).
      type: str
      sample: /etc/rc.d/rc.local
    backup_files:
      description: Backup copies made by O(backup), by file.
      type: dict
      sample: {"/etc/rc.local": "/etc/rc.local.12345.2026-11-27@00:00:00~"}
diff:
  description: The knob diff and one diff per boot file (see the diff_mode attribute).
  returned: when diff mode is on
  type: list
  elements: dict
  sample: [{"before": "run = 0\n", "after": "run = 1\n", "before_header": "/sys/kernel/mm/ksm", "after_header": "/sys/kernel/mm/ksm"}]
'''

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.samepage.ksm.plugins.module_utils import _ksm
from ansible_collections.samepage.ksm.plugins.module_utils import _persist
from ansible_collections.samepage.ksm.plugins.module_utils._diff import DifferenceTracker
from ansible_collections.samepage.ksm.plugins.module_utils._fileedit import BlockError
from ansible_collections.samepage.ksm.plugins.module_utils._fileplan import FilePlan, FilePlanError
from ansible_collections.samepage.ksm.plugins.module_utils._ksm_info import (
    default_kernel_config_paths, gather, kernel_config, wait_for_full_scans)
from ansible_collections.samepage.ksm.plugins.module_utils._node_checks import (
    COMPETING_KINDS, competing_blockers, probe)

_now = getattr(time, 'monotonic', time.time)
POLL_SECONDS = 0.2
PERSIST_CHOICES = ('keep',) + _persist.BACKENDS + ('none',)


def argument_spec():
    return dict(
        settings=_ksm.settings_spec(),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        persist=dict(type='str', choices=list(PERSIST_CHOICES)),
        boost=_ksm.settings_spec(),
        boost_seconds=dict(type='raw', default=600),
        reset=dict(type='bool', default=True),
        competing=dict(type='str', default='warn', choices=['ignore', 'warn', 'fail']),
        competing_allow=dict(type='list', elements='str', default=[], choices=list(COMPETING_KINDS)),
        manage_units=dict(type='bool', default=True),
        strict=dict(type='bool', default=False),
        verify_ksmd=dict(type='bool', default=False),
        wait_full_scan=dict(type='bool', default=False),
        wait_timeout=dict(type='int', default=300),
        unmerge_timeout=dict(type='int', default=60),
        force_unmerge=dict(type='bool', default=False),
        top_processes=dict(type='int', default=0),
        sysfs_path=dict(type='path', default=_ksm.DEFAULT_SYSFS_PATH),
        proc_path=dict(type='path', default='/proc'),
        meminfo_path=dict(type='path', default='/proc/meminfo'),
        rc_local_path=dict(type='path', default='/etc/rc.local'),
        systemd_dir=dict(type='path', default='/etc/systemd/system'),
        tmpfiles_dir=dict(type='path', default='/etc/tmpfiles.d'),
        backup=dict(type='bool', default=False),
    )


class ApplyError(Exception):
    """A step of the plan failed; carries what the failure report needs."""

    def __init__(self, msg, knob=None, value=None, error=None):
        super(ApplyError, self).__init__(msg)
        self.msg = msg
        self.knob = knob
        self.value = value
        self.error = error


class Plan(object):
    """The runtime writes, decided before the first one."""

    def __init__(self, current, wanted, skipped, unmerge_first=False):
        self.current = current
        self.wanted = wanted
        self.skipped = skipped
        self.tracker = DifferenceTracker()
        for name in _ksm.ordered(wanted):
            self.tracker.add(name, current[name], wanted[name])
        self.changes = self.tracker.differences()
        changed_names = set(c['key'] for c in self.changes)
        busy = current.get('pages_shared', 0) > 0 or current.get(_ksm.RUN) == 1
        self.unmerge_first = unmerge_first
        self.needs_unmerge = unmerge_first or (
            any(_ksm.KNOB_BY_NAME[n].needs_unmerge for n in changed_names) and busy)
        self.unmerge_requested = _ksm.RUN in changed_names and wanted[_ksm.RUN] == 2
        self.final_run = wanted.get(_ksm.RUN, current.get(_ksm.RUN))

    @property
    def unmerges(self):
        return self.needs_unmerge or self.unmerge_requested

    @property
    def changed(self):
        return bool(self.changes) or self.unmerge_first

    def knobs_after(self):
        after = dict((n, v) for n, v in self.current.items() if n in _ksm.KNOB_BY_NAME)
        after.update(self.wanted)
        return after

    def paths_written(self):
        names = [c['key'] for c in self.changes]
        if self.needs_unmerge and _ksm.RUN not in names:
            names.append(_ksm.RUN)
        return names


def wait_unshared(sysfs, timeout):
    deadline = _now() + timeout
    while True:
        shared = _ksm.read_knob(sysfs, 'pages_shared')
        if shared == 0:
            return
        if _now() >= deadline:
            raise ApplyError('pages_shared is still %d %d seconds after unmerging (run set to 2); raise unmerge_timeout '
                             'or stop what keeps the pages merged' % (shared, timeout), knob='pages_shared')
        time.sleep(POLL_SECONDS)


class Applier(object):
    """Executes a runtime plan; remembers what it touched so it can put it back."""

    def __init__(self, sysfs, plan, timeout):
        self.sysfs = sysfs
        self.plan = plan
        self.timeout = timeout
        self.touched = []
        self.unmerged = False

    def write(self, name, value):
        if name not in self.touched:
            self.touched.append(name)
        try:
            _ksm.write_knob(self.sysfs, name, value)
        except (IOError, OSError) as error:
            raise ApplyError('writing %s = %s to %s failed: %s' % (
                name, _ksm.format_knob(name, value), _ksm.knob_path(self.sysfs, name),
                _ksm.describe_os_error(error)), knob=name, value=value, error=_ksm.describe_os_error(error))

    def unmerge(self):
        self.write(_ksm.RUN, 2)
        self.unmerged = True
        wait_unshared(self.sysfs, self.timeout)

    def apply(self):
        live_run = self.plan.current.get(_ksm.RUN)
        if self.plan.unmerge_first:
            self.unmerge()
            live_run = 2
        for change in self.plan.changes:
            name = change['key']
            if name == _ksm.RUN:
                continue
            if _ksm.KNOB_BY_NAME[name].needs_unmerge and self.plan.needs_unmerge and not self.unmerged:
                self.unmerge()
                live_run = 2
            self.write(name, change['after'])
        if self.plan.final_run is not None and self.plan.final_run != live_run:
            self.write(_ksm.RUN, self.plan.final_run)

    def rollback(self):
        """Put every touched knob back to its value before the task, newest first."""
        restored, errors = [], []
        for name in reversed(self.touched):
            original = self.plan.current[name]
            try:
                if _ksm.read_knob(self.sysfs, name) == original:
                    continue
            except (IOError, OSError):
                pass
            try:
                _ksm.write_knob(self.sysfs, name, original)
                restored.append(name)
            except (IOError, OSError) as error:
                errors.append('%s = %s: %s' % (name, original, _ksm.describe_os_error(error)))
        return restored, errors


def rollback_message(applier):
    restored, errors = applier.rollback()
    msg = '; rolled back %s' % (', '.join(restored) if restored else 'no knob (none had changed)')
    if errors:
        msg += '; ROLLBACK FAILED for %s: check these knobs by hand' % '; '.join(errors)
    return msg, restored, errors


class Run(object):
    """One module run: validate, plan, act, verify."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.state = self.params['state']
        self.sysfs = self.params['sysfs_path'].rstrip('/') or '/'
        persist = self.params['persist']
        if persist is None:
            persist = 'keep' if self.state == 'present' else 'none'
        self.persist = persist
        self.errors = []
        self.warnings = []

    def fail(self, msg, **kwargs):
        self.module.fail_json(msg=msg, **kwargs)

    # -- validate -------------------------------------------------------------------------
    def validate_options(self):
        params = self.params
        errors = self.errors
        seconds = _ksm.parse_whole(params['boost_seconds'], 1, _persist.BOOST_SECONDS_MAX)
        if seconds is None:
            errors.append('boost_seconds: invalid value %r; expected a whole number of seconds from 1 to %d '
                          '(an integer or a string of ASCII digits)' % (params['boost_seconds'], _persist.BOOST_SECONDS_MAX))
        self.boost_seconds = seconds
        for name, low, what in (('unmerge_timeout', 0, '0 or more'), ('wait_timeout', 1, '1 or more'),
                                ('top_processes', 0, '0 (none) or more')):
            if params[name] < low:
                errors.append('%s: invalid value %d; expected a whole number, %s' % (name, params[name], what))
        self.settings = dict((k, v) for k, v in (params['settings'] or {}).items() if v is not None)
        self.boost = dict((k, v) for k, v in (params['boost'] or {}).items() if v is not None)
        if self.state == 'present':
            if not self.settings:
                errors.append('settings is empty: give at least one knob, e.g. {run: 1}; to switch KSM off '
                              'use state: absent')
            wanted, setting_errors = _ksm.validate_settings(self.settings)
            errors.extend('settings: %s' % e for e in setting_errors)
            self.wanted_all = wanted
            if self.boost and self.persist not in ('rc_local', 'systemd'):
                errors.append('boost is applied at boot: it needs persist: rc_local or persist: systemd (got %s)'
                              % self.persist)
        else:
            self.wanted_all = {}
            if self.persist not in ('keep', 'none'):
                errors.append('persist: %s cannot go with state: absent, which removes the boot configuration; '
                              'use persist: none (the default) or keep' % self.persist)
        self.boot, self.relax = [], []
        if self.state == 'present' and self.persist in _persist.BACKENDS and seconds is not None:
            boot, relax, boot_errors = _persist.validate(
                'present', self.persist, self.settings, self.boost, seconds, self.sysfs)
            # the settings' own errors are already listed once
            errors.extend(e for e in boot_errors if not e.startswith('settings'))
            self.boot, self.relax = boot, relax

    def validate_runtime(self, current):
        """(wanted knobs this kernel has, skipped knobs) for state present; adds to self.errors."""
        wanted = self.wanted_all
        missing = [n for n in _ksm.ordered(wanted) if n not in current
                   and wanted[n] != _ksm.KNOB_BY_NAME[n].missing_means]
        if missing and self.params['strict']:
            hint = ''
            if any(n.startswith('advisor_') for n in missing):
                hint = ' (the scan-time advisor needs Linux 6.8 or newer: pick a profile without it)'
            self.errors.append(
                'this kernel has no KSM knob %s in %s%s (strict: true); knobs present: %s. Leave the knob unset '
                'on this host or set strict: false to skip it with a warning'
                % (', '.join(missing), self.sysfs, hint, ', '.join(n for n in _ksm.KNOB_NAMES if n in current) or 'none'))
        present = dict((n, v) for n, v in wanted.items() if n in current)
        self.errors.extend(_ksm.cross_check(present, current))
        return present, missing

    # -- preflight ------------------------------------------------------------------------
    def missing_sysfs_reason(self):
        config, source, dummy = kernel_config(default_kernel_config_paths())
        if config == 'n':
            return ('%s does not exist: the kernel is built without KSM (CONFIG_KSM is not set in %s); boot a kernel '
                    'with CONFIG_KSM=y' % (self.sysfs, source))
        return ('%s does not exist: this kernel lacks KSM (CONFIG_KSM is off) or this is a container that cannot '
                'see it; target the hardware node' % self.sysfs)

    def check_memory(self, plan):
        """Refuse an unmerge the free memory cannot absorb (unless forced)."""
        if not plan.unmerges or self.params['force_unmerge']:
            return
        pages = plan.current.get('pages_sharing', 0) + plan.current.get('ksm_zero_pages', 0)
        if pages <= 0:
            return
        needed = pages * _ksm.page_size()
        path = self.params['meminfo_path']
        try:
            available = _ksm.available_memory(_ksm.read_meminfo(path))
        except (IOError, OSError) as error:
            self.fail('cannot read %s to check that unmerging fits in memory: %s; set force_unmerge: '
                      'true to unmerge without the check; nothing was written' % (path, _ksm.describe_os_error(error)))
        if needed > available:
            self.fail('unmerging would copy back %d MiB (%d pages shared by KSM) but MemAvailable is only %d MiB; '
                      'nothing was written. Free memory first, or set force_unmerge: true to unmerge anyway '
                      '(the host may swap or OOM-kill)' % (needed // 1048576, pages, available // 1048576),
                      needed_bytes=needed, available_bytes=available)

    def check_writable(self, plan, all_knobs=False):
        """Fail (warn in check mode) unless every knob to write is writable here; with ``all_knobs``
        (state present) the directory itself must be, even when nothing needs writing this time."""
        names = plan.paths_written()
        if all_knobs and _ksm.RUN not in names and _ksm.RUN in plan.current:
            names.append(_ksm.RUN)
        denied = [n for n in names if not os.access(_ksm.knob_path(self.sysfs, n), os.W_OK)]
        if not denied:
            return
        msg = ('%s exists but is not writable here (%s: permission denied or a read-only file system); run the task '
               'as root (become: true) on the hardware node itself - a container sees the host kernel\'s KSM '
               'read-only' % (self.sysfs, ', '.join(denied)))
        if self.module.check_mode:
            self.module.warn(msg)
        else:
            self.fail(msg + '; nothing was written')

    def systemctl(self):
        binary = self.module.get_bin_path('systemctl')
        if not binary:
            return None

        def run(argv):
            return self.module.run_command([binary] + argv, environ_update={'LC_ALL': 'C'})
        return run

    # -- act ------------------------------------------------------------------------------
    def manage_units(self, node, boot_info, result):
        """daemon-reload, enable new units, stop removed active ones. Returns the commands' failures."""
        systemctl = node.get('systemctl')
        if boot_info['daemon_reload_needed']:
            self.run_systemctl(systemctl, ['daemon-reload'])
        if result['units_enabled']:
            self.run_systemctl(systemctl, ['enable', '--'] + result['units_enabled'])
        if result['units_stopped']:
            self.run_systemctl(systemctl, ['stop', '--'] + result['units_stopped'])

    def run_systemctl(self, systemctl, argv):
        rc, out, err = systemctl(argv)
        if rc != 0:
            raise FilePlanError('systemctl %s failed (rc %d): %s; the boot files are written, the units are not '
                                'in their final state: run the command by hand'
                                % (' '.join(argv), rc, (err or out).strip()))

    def main(self):
        module = self.module
        params = self.params
        self.validate_options()
        available = os.path.isdir(self.sysfs)
        current = {}
        if available:
            try:
                current = _ksm.read_all(self.sysfs)
            except (IOError, OSError) as error:
                self.fail('cannot read the KSM knobs in %s: %s; run the task as root (become: true)'
                          % (self.sysfs, _ksm.describe_os_error(error)))
        elif self.state == 'present':
            self.errors.insert(0, self.missing_sysfs_reason())

        plan = None
        skipped = []
        if available and self.state == 'present':
            wanted, skipped = self.validate_runtime(current)
            plan = Plan(current, wanted, skipped)
        elif available:
            defaults = dict((k.name, k.default) for k in _ksm.KNOBS
                            if k.default is not None and k.name in current) if params['reset'] else {}
            defaults[_ksm.RUN] = 0
            busy = current.get('pages_shared', 0) > 0 or current.get('pages_sharing', 0) > 0
            plan = Plan(current, defaults, [], unmerge_first=busy)

        files = FilePlan(module)
        boot_info = dict(rc_local_target=os.path.realpath(params['rc_local_path']), units=[], units_removed=[],
                         daemon_reload_needed=False, warnings=[])
        if self.persist != 'keep' and not self.errors:
            try:
                boot_info = _persist.plan_boot(
                    files, self.persist if self.persist in _persist.BACKENDS else None, self.boot, self.relax,
                    self.boost_seconds, self.sysfs, params['rc_local_path'], params['systemd_dir'],
                    params['tmpfiles_dir'], backup=params['backup'])
            except (BlockError, FilePlanError) as error:
                self.errors.append(str(error))
        if self.errors:
            self.fail('invalid options or state, nothing was written: %s' % '; '.join(self.errors), errors=self.errors)

        # Other controllers and systemd, in one read-only probe.
        node = dict(systemd=False, competing=[], enabled_units=[], active_units=[])
        want_units = params['manage_units'] and (boot_info['units'] or boot_info['units_removed'])
        if params['competing'] != 'ignore' or want_units:
            systemctl = self.systemctl()
            try:
                node = probe(self.sysfs, params['rc_local_path'], systemctl=systemctl, proc_path=params['proc_path'],
                             competing=params['competing'] != 'ignore')
            except OSError as error:
                self.fail('node checks failed: %s; nothing was written' % error)
            node['systemctl'] = systemctl
        competing = node['competing']
        if competing:
            blockers = competing_blockers(competing, params['competing_allow']) if params['competing'] == 'fail' else []
            if blockers:
                self.fail('other KSM controllers would override these settings: %s. Remove them, or set competing: '
                          'warn; nothing was written' % '; '.join(item['detail'] for item in blockers),
                          competing=competing)
            module.warn('other KSM controllers may override these settings: %s.'
                        % '; '.join(item['detail'] for item in competing))

        if plan is not None:
            self.check_memory(plan)
            self.check_writable(plan, all_knobs=self.state == 'present')
        for name in skipped:
            module.warn('this kernel has no KSM knob %s in %s; skipped it (set strict: true to fail instead)'
                        % (name, self.sysfs))
        for warning in boot_info['warnings']:
            module.warn(warning)

        manage = params['manage_units'] and node['systemd']
        persist = dict(
            backend=self.persist if self.persist in _persist.BACKENDS else None,
            files=files.files,
            removed=files.removed,
            units=boot_info['units'],
            units_enabled=[u for u in boot_info['units'] if u not in node['enabled_units']] if manage else [],
            units_removed=boot_info['units_removed'],
            units_stopped=[u for u in boot_info['units_removed'] if u in node['active_units']] if manage else [],
            daemon_reload_needed=boot_info['daemon_reload_needed'],
            systemd=node['systemd'],
            rc_local_target=boot_info['rc_local_target'],
            backup_files={},
        )
        runtime_changed = plan is not None and plan.changed
        result = dict(
            changed=runtime_changed or files.changed or bool(persist['units_enabled'] or persist['units_stopped']),
            changes=[dict(knob=c['key'], before=c['before'], after=c['after']) for c in plan.changes] if plan else [],
            skipped=skipped,
            unmerged=bool(plan and plan.unmerges),
            competing=competing,
            persist=persist,
        )
        if module._diff:
            diffs = []
            if plan is not None and not plan.tracker.empty:
                diffs.append(plan.tracker.as_text_diff(header=self.sysfs))
            diffs.extend(files.diff())
            result['diff'] = diffs

        if module.check_mode:
            result['ksm'] = self.report()
            if plan is not None:
                result['ksm']['knobs'].update(dict((n, v) for n, v in plan.knobs_after().items()
                                                   if n in result['ksm']['knobs']))
            module.exit_json(**result)

        # Act: the running kernel first, then the boot files (whole or not at all), then the units.
        applier = None
        if plan is not None and plan.changed:
            applier = Applier(self.sysfs, plan, params['unmerge_timeout'])
            try:
                applier.apply()
            except ApplyError as failure:
                msg, restored, errors = rollback_message(applier)
                self.fail(failure.msg + msg + '; no boot file was changed', knob=failure.knob, value=failure.value,
                          error=failure.error, rolled_back=restored, rollback_errors=errors, unmerged=applier.unmerged)
        if files.changed:
            try:
                done = files.apply()
            except FilePlanError as error:
                msg = str(error)
                if applier is not None:
                    extra, restored, errors = rollback_message(applier)
                    msg += extra
                self.fail(msg, **result)
            persist['backup_files'] = done['backups']
        for warning in files.warnings:
            module.warn(warning)
        if manage and (persist['daemon_reload_needed'] or persist['units_enabled'] or persist['units_stopped']):
            try:
                self.manage_units(node, boot_info, persist)
            except FilePlanError as error:
                self.fail(str(error), **result)

        # Verify: the kernel must hold what was asked for.
        if plan is not None and params['wait_full_scan'] and plan.changed and plan.final_run == 1:
            target = current.get('full_scans', 0) + 2
            reached, value, waited = wait_for_full_scans(self.sysfs, target, params['wait_timeout'])
            if not reached:
                self.fail('full_scans is %s after %d s, wanted >= %d: ksmd did not finish a whole scan with the new '
                          'values in time. It scans only while some process has mergeable memory; a larger '
                          'pages_to_scan or a longer wait_timeout helps' % (value, waited, target), **result)
        result['ksm'] = self.report()
        if plan is not None:
            live = result['ksm']['knobs']
            wrong = ['%s=%s (wanted %s)' % (n, live.get(n), v) for n, v in sorted(plan.wanted.items())
                     if live.get(n) != v]
            if wrong:
                self.fail('the kernel does not hold the wanted KSM values after writing them: %s. Something else '
                          'writes these knobs (see competing), or the kernel adjusted them' % ', '.join(wrong), **result)
            if (params['verify_ksmd'] and live.get(_ksm.RUN) == 1 and not result['ksm']['ksmd']['running']):
                self.fail('ksmd is not running although run is 1 (a kernel thread is invisible inside a PID namespace: '
                          'set verify_ksmd: false when targeting a container)', **result)
        module.exit_json(**result)

    def report(self):
        info, warnings = gather(sysfs_path=self.sysfs, proc_path=self.params['proc_path'],
                                top=self.params['top_processes'])
        for warning in warnings:
            self.module.warn(warning)
        return info


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[('state', 'present', ('settings',))],
        supports_check_mode=True,
    )
    Run(module).main()


if __name__ == '__main__':
    main()
