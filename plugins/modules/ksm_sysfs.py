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
short_description: Set the kernel's KSM (kernel same-page merging) knobs at runtime
version_added: 1.0.0
description:
  - Sets the knobs of the Linux KSM daemon C(ksmd) under C(/sys/kernel/mm/ksm) for the running kernel.
    The values last until the next reboot; use M(samepage.ksm.ksm_persist) to apply them at boot.
  - Reads every knob first, validates every value (type, range, choices and the rules that tie knobs
    together) and computes the plan before the first write. Only knobs whose value differs are written.
  - Writes in a safe order. O(advisor_mode) is written before O(pages_to_scan), and O(pages_to_scan) is never
    written while the advisor is, or will be, C(scan-time) (the kernel answers EINVAL). O(run) is written last.
  - The kernel refuses to change O(merge_across_nodes) and O(max_page_sharing) while pages are merged (EBUSY).
    When one of them must change while pages are shared or C(ksmd) runs, the module unmerges every page
    (writes C(2) to C(run)), waits up to O(unmerge_timeout) seconds for C(pages_shared) to reach 0,
    writes the knob, then writes O(run) if given, or else the previous value of C(run).
  - Before it unmerges (also when O(run=2) is requested), the module checks that C(MemAvailable) can absorb
    the pages that unmerging copies back, and fails without writing anything unless O(force_unmerge=true).
  - When a write fails part-way, the knobs already written are put back in reverse order and the module fails,
    naming the knob, the value and the kernel's error. C(ksmd) is never left stopped by an unmerge of this module.
author:
  - samepage.ksm maintainers (@samepage)
extends_documentation_fragment:
  - samepage.ksm._attributes
  - samepage.ksm._attributes.platform
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff shows every requested knob the kernel has as C(knob = value) lines, before and after.
  platform:
    platforms: linux
options:
  run:
    description:
      - V(0) stops C(ksmd) (merged pages stay merged), V(1) runs it, V(2) stops it and unmerges every merged page.
      - Changing to V(2) is subject to the same memory check as an unmerge, see O(force_unmerge).
    type: int
    choices: [0, 1, 2]
  pages_to_scan:
    description:
      - Pages C(ksmd) scans before it sleeps, from V(0) to V(4294967295).
      - Cannot be set while O(advisor_mode) is, or becomes, V(scan-time); the advisor owns it then.
    type: int
  sleep_millisecs:
    description:
      - Milliseconds C(ksmd) sleeps between scans, from V(0) to V(4294967295).
    type: int
  merge_across_nodes:
    description:
      - V(1) merges pages across NUMA nodes, V(0) only within one node.
      - Changing it unmerges every page first, see the module description. Only NUMA kernels have this knob.
    type: int
    choices: [0, 1]
  use_zero_pages:
    description:
      - Merge empty pages with the kernel's zero page.
    type: bool
  max_page_sharing:
    description:
      - Most pages that may share one KSM page, from V(2) to V(2147483647).
      - Changing it unmerges every page first, see the module description.
    type: int
  stable_node_chains_prune_millisecs:
    description:
      - Milliseconds between prunes of stale stable_node chains, from V(0) to V(4294967295).
    type: int
  smart_scan:
    description:
      - Skip pages that did not de-duplicate in earlier scans.
    type: bool
  advisor_mode:
    description:
      - V(scan-time) lets the kernel tune O(pages_to_scan) to reach O(advisor_target_scan_time); V(none) turns that off.
    type: str
    choices: [none, scan-time]
  advisor_max_cpu:
    description:
      - Upper bound of C(ksmd) CPU use, in percent (V(1) to V(100)), for the V(scan-time) advisor.
    type: int
  advisor_min_pages_to_scan:
    description:
      - Lower bound of the O(pages_to_scan) the advisor chooses, from V(0) to V(4294967295).
      - Must not exceed O(advisor_max_pages_to_scan) (the given or the current value).
    type: int
  advisor_max_pages_to_scan:
    description:
      - Upper bound of the O(pages_to_scan) the advisor chooses, from V(0) to V(4294967295).
    type: int
  advisor_target_scan_time:
    description:
      - Seconds the advisor aims for one full scan, from V(1) to V(4294967295).
    type: int
  sysfs_path:
    description:
      - Directory of the KSM knobs. Change it only to point at a copy of the tree, for tests.
    type: path
    default: /sys/kernel/mm/ksm
  strict:
    description:
      - What to do with a requested knob the running kernel lacks (older kernels have no C(advisor_*),
        C(smart_scan) or C(use_zero_pages); non-NUMA kernels have no C(merge_across_nodes)).
      - V(false) warns and skips it; V(true) fails before anything is written.
    type: bool
    default: false
  unmerge_timeout:
    description:
      - Seconds to wait, after unmerging, for C(pages_shared) to reach 0 before O(merge_across_nodes) or
        O(max_page_sharing) is written. On timeout the module rolls back and fails.
    type: int
    default: 60
  force_unmerge:
    description:
      - Unmerge even when C(MemAvailable) in O(meminfo_path) is smaller than the memory that unmerging
        copies back (C(pages_sharing) plus C(ksm_zero_pages), times the page size). This can push the host
        into swap or the OOM killer.
    type: bool
    default: false
  meminfo_path:
    description:
      - File read for C(MemAvailable) before an unmerge. Change it only for tests.
    type: path
    default: /proc/meminfo
notes:
  - Needs root (use O(ignore:become=true)); a C(permission denied) on any knob fails before anything is written.
  - KSM state is global to the kernel; containers share the host's knobs and usually see C(/sys) read-only.
    Target the hardware node.
seealso:
  - module: samepage.ksm.ksm_info
  - module: samepage.ksm.ksm_persist
  - name: Kernel Samepage Merging (kernel documentation)
    description: The meaning of every knob.
    link: https://docs.kernel.org/admin-guide/mm/ksm.html
'''

EXAMPLES = r'''
- name: Start ksmd with a scan rate suited to a virtualisation host
  samepage.ksm.ksm_sysfs:
    run: 1
    pages_to_scan: 1000
    sleep_millisecs: 50
  become: true

- name: Let the kernel tune the scan rate (pages_to_scan stays unset)
  samepage.ksm.ksm_sysfs:
    advisor_mode: scan-time
    advisor_max_cpu: 30
    advisor_target_scan_time: 120
    run: 1
  become: true

- name: Keep merges inside NUMA nodes (unmerges first, then restores run)
  samepage.ksm.ksm_sysfs:
    merge_across_nodes: 0
    unmerge_timeout: 120
  become: true

- name: Stop ksmd and give every merged page back
  samepage.ksm.ksm_sysfs:
    run: 2
  become: true

- name: Fail instead of skipping knobs this kernel lacks
  samepage.ksm.ksm_sysfs:
    smart_scan: true
    use_zero_pages: true
    strict: true
  become: true
'''

RETURN = r'''
knobs:
  description:
    - Every knob the kernel has, with its value after the task (in check mode, the value it would have).
    - Boolean knobs are reported as the kernel prints them, C(0) or C(1).
  returned: success
  type: dict
  sample: {"run": 1, "pages_to_scan": 1000, "sleep_millisecs": 50, "advisor_mode": "none", "use_zero_pages": 0}
changes:
  description:
    - The knobs whose value changed (or would change, in check mode), in the order they were written.
    - The temporary V(2) written to C(run) for an unmerge is not listed; see RV(unmerged).
  returned: success
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
  returned: success
  type: list
  elements: str
  sample: [merge_across_nodes]
unmerged:
  description: Whether every merged page was unmerged (in check mode, would be) to change a knob that needs it.
  returned: success
  type: bool
  sample: false
diff:
  description: Requested knobs as C(knob = value) lines, before and after.
  returned: success and diff mode is on
  type: dict
  contains:
    before:
      description: Values before the task.
      type: str
      sample: "pages_to_scan = 100\nrun = 0\n"
    after:
      description: Values after the task.
      type: str
      sample: "pages_to_scan = 1000\nrun = 1\n"
    before_header:
      description: The knob directory.
      type: str
      sample: /sys/kernel/mm/ksm
    after_header:
      description: The knob directory.
      type: str
      sample: /sys/kernel/mm/ksm
'''

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.samepage.ksm.plugins.module_utils._diff import DifferenceTracker
from ansible_collections.samepage.ksm.plugins.module_utils import _ksm

_now = getattr(time, 'monotonic', time.time)
POLL_SECONDS = 0.2


class ApplyError(Exception):
    """A step of the plan failed; carries what the failure report needs."""

    def __init__(self, msg, knob=None, value=None, error=None):
        super(ApplyError, self).__init__(msg)
        self.msg = msg
        self.knob = knob
        self.value = value
        self.error = error


def argument_spec():
    spec = dict(
        run=dict(type='int', choices=[0, 1, 2]),
        pages_to_scan=dict(type='int'),
        sleep_millisecs=dict(type='int'),
        merge_across_nodes=dict(type='int', choices=[0, 1]),
        use_zero_pages=dict(type='bool'),
        max_page_sharing=dict(type='int'),
        stable_node_chains_prune_millisecs=dict(type='int'),
        smart_scan=dict(type='bool'),
        advisor_mode=dict(type='str', choices=['none', 'scan-time']),
        advisor_max_cpu=dict(type='int'),
        advisor_min_pages_to_scan=dict(type='int'),
        advisor_max_pages_to_scan=dict(type='int'),
        advisor_target_scan_time=dict(type='int'),
        sysfs_path=dict(type='path', default=_ksm.DEFAULT_SYSFS_PATH),
        strict=dict(type='bool', default=False),
        unmerge_timeout=dict(type='int', default=60),
        force_unmerge=dict(type='bool', default=False),
        meminfo_path=dict(type='path', default='/proc/meminfo'),
    )
    return spec


class Plan(object):
    """Everything decided before the first write."""

    def __init__(self, current, wanted, skipped):
        self.current = current
        self.wanted = wanted
        self.skipped = skipped
        self.tracker = DifferenceTracker()
        for name in _ksm.ordered(wanted):
            self.tracker.add(name, current[name], wanted[name])
        self.changes = self.tracker.differences()
        changed_names = set(c['key'] for c in self.changes)
        self.needs_unmerge = any(_ksm.KNOB_BY_NAME[n].needs_unmerge for n in changed_names) and (
            current.get('pages_shared', 0) > 0 or current.get('run') == 1)
        self.unmerge_requested = 'run' in changed_names and wanted['run'] == 2
        self.final_run = wanted.get('run', current.get('run'))

    @property
    def unmerges(self):
        return self.needs_unmerge or self.unmerge_requested

    def knobs_after(self):
        after = dict((n, v) for n, v in self.current.items() if n in _ksm.KNOB_BY_NAME)
        after.update(self.wanted)
        return after

    def paths_written(self):
        names = [c['key'] for c in self.changes]
        if self.needs_unmerge and 'run' not in names:
            names.append('run')
        return names


def validate(module, current):
    """All input checks; returns (wanted, skipped) or fails listing every problem."""
    params = module.params
    errors = []
    wanted = {}
    for name in _ksm.KNOB_NAMES:
        value = params[name]
        if value is None:
            continue
        normalized, error = _ksm.normalize_value(name, value)
        if error:
            errors.append(error)
        else:
            wanted[name] = normalized
    if params['unmerge_timeout'] < 0:
        errors.append('unmerge_timeout: invalid value %d; expected a whole number of seconds, 0 or more'
                      % params['unmerge_timeout'])
    missing = [n for n in _ksm.ordered(wanted) if n not in current]
    if missing and params['strict']:
        errors.append(
            'this kernel has no KSM knob %s in %s (strict: true); knobs present: %s. Leave the knob unset '
            'on this host or set strict: false to skip it with a warning'
            % (', '.join(missing), params['sysfs_path'],
               ', '.join(n for n in _ksm.KNOB_NAMES if n in current) or 'none'))
    present = dict((n, v) for n, v in wanted.items() if n in current)
    errors.extend(_ksm.cross_check(present, current))
    if errors:
        module.fail_json(msg='invalid KSM settings: %s' % '; '.join(errors), errors=errors)
    return present, missing


def check_memory(module, plan):
    """Refuse an unmerge the free memory cannot absorb (unless forced)."""
    if not plan.unmerges or module.params['force_unmerge']:
        return
    pages = plan.current.get('pages_sharing', 0) + plan.current.get('ksm_zero_pages', 0)
    if pages <= 0:
        return
    needed = pages * _ksm.page_size()
    path = module.params['meminfo_path']
    try:
        available = _ksm.available_memory(_ksm.read_meminfo(path))
    except (IOError, OSError) as error:
        module.fail_json(msg='cannot read %s to check that unmerging fits in memory: %s; set force_unmerge: '
                             'true to unmerge without the check' % (path, _ksm.describe_os_error(error)))
    if needed > available:
        module.fail_json(
            msg='unmerging would copy back %d MiB (%d pages shared by KSM) but MemAvailable is only %d MiB; '
                'nothing was written. Free memory first, or set force_unmerge: true to unmerge anyway '
                '(the host may swap or OOM-kill)' % (needed // 1048576, pages, available // 1048576),
            needed_bytes=needed, available_bytes=available)


def check_writable(module, plan):
    sysfs = module.params['sysfs_path']
    denied = [n for n in plan.paths_written() if not os.access(_ksm.knob_path(sysfs, n), os.W_OK)]
    if not denied:
        return
    msg = ('cannot write %s in %s: permission denied or read-only file system; run the task as root '
           '(become: true) on the host itself, not in a container that sees /sys read-only'
           % (', '.join(denied), sysfs))
    if module.check_mode:
        module.warn(msg)
    else:
        module.fail_json(msg=msg + '; nothing was written')


def wait_unshared(sysfs, timeout):
    deadline = _now() + timeout
    while True:
        shared = _ksm.read_knob(sysfs, 'pages_shared')
        if shared == 0:
            return
        if _now() >= deadline:
            raise ApplyError('pages_shared is still %d %d seconds after unmerging (run=2); raise unmerge_timeout '
                             'or stop what keeps the pages merged' % (shared, timeout), knob='pages_shared')
        time.sleep(POLL_SECONDS)


class Applier(object):
    """Executes a plan; remembers what it touched so it can put it back."""

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
        self.write('run', 2)
        self.unmerged = True
        wait_unshared(self.sysfs, self.timeout)

    def apply(self):
        live_run = self.plan.current.get('run')
        for change in self.plan.changes:
            name = change['key']
            if name == 'run':
                continue
            if _ksm.KNOB_BY_NAME[name].needs_unmerge and self.plan.needs_unmerge and not self.unmerged:
                self.unmerge()
                live_run = 2
            self.write(name, change['after'])
        if self.plan.final_run is not None and self.plan.final_run != live_run:
            self.write('run', self.plan.final_run)

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


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    sysfs = module.params['sysfs_path']
    try:
        _ksm.require_sysfs(sysfs)
        current = _ksm.read_all(sysfs)
    except _ksm.KsmError as error:
        module.fail_json(msg=str(error))
    except (IOError, OSError) as error:
        module.fail_json(msg='cannot read the KSM knobs in %s: %s; run the task as root (become: true)'
                             % (sysfs, _ksm.describe_os_error(error)))
    wanted, skipped = validate(module, current)
    plan = Plan(current, wanted, skipped)
    check_memory(module, plan)
    check_writable(module, plan)
    for name in skipped:
        module.warn('this kernel has no KSM knob %s in %s; skipped it (set strict: true to fail instead)'
                    % (name, sysfs))

    result = dict(
        changed=bool(plan.changes),
        changes=[dict(knob=c['key'], before=c['before'], after=c['after']) for c in plan.changes],
        skipped=skipped,
        unmerged=plan.unmerges,
        knobs=plan.knobs_after(),
    )
    if module._diff:
        result['diff'] = plan.tracker.as_text_diff(header=sysfs)

    if plan.changes and not module.check_mode:
        applier = Applier(sysfs, plan, module.params['unmerge_timeout'])
        try:
            applier.apply()
        except ApplyError as failure:
            restored, errors = applier.rollback()
            msg = failure.msg
            msg += '; rolled back %s' % (', '.join(restored) if restored else 'nothing (no knob had changed)')
            if errors:
                msg += '; ROLLBACK FAILED for %s: check these knobs by hand' % '; '.join(errors)
            module.fail_json(msg=msg, knob=failure.knob, value=failure.value, error=failure.error,
                             rolled_back=restored, rollback_errors=errors, unmerged=applier.unmerged)
        after = _ksm.read_all(sysfs)
        knobs = dict((n, v) for n, v in after.items() if n in _ksm.KNOB_BY_NAME)
        drifted = [c['key'] for c in plan.changes if knobs.get(c['key']) != c['after']]
        if drifted:
            module.warn('the kernel reports other values than written for %s (%s)' % (
                ', '.join(drifted), ', '.join('%s = %s' % (n, knobs.get(n)) for n in drifted)))
        result['knobs'] = knobs
    module.exit_json(**result)


if __name__ == '__main__':
    main()
