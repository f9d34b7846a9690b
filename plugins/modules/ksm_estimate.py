#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ksm_estimate
short_description: Estimate the memory KSM would save on a node, before it is turned on
version_added: 1.0.0
description:
  - Reads the memory of candidate processes and counts the pages whose content is identical
    across them (and the zero pages apart), to tell how much KSM (kernel same-page merging) would
    save on this node, in total and per container, systemd unit or process.
  - Candidates are chosen by O(pids), O(units), O(cgroups), O(containers) or O(command) (any of
    them), or are all processes when none is given; O(min_size_mib) drops small processes.
  - For each candidate the private mappings of C(/proc/PID/smaps) that hold anonymous memory are
    walked through C(/proc/PID/pagemap); pages that are present and anonymous are read from
    C(/proc/PID/mem). Zero pages are counted exactly (C(/proc/kpageflags) tells a KSM page holding
    zeros from the kernel's shared zero page, which costs nothing). Other pages are sampled by
    content hash (every copy of a content is kept or dropped together, so the estimate is
    unbiased) in a table of at most O(max_entries) contents; when it fills up the sampled slice
    halves, and the standard error of the estimate is returned. A content repeated in a run of
    pages (a buffer filled with one pattern) is counted exactly whatever its hash.
  - The estimated saving of a content with N copies is N - ceil(N / max_page_sharing); zero
    pages all count with O(use_zero_pages). The estimate assumes every candidate opts in to KSM
    as a whole (C(prctl(PR_SET_MEMORY_MERGE)), systemd C(MemoryKSM=yes), the collection's preload
    library), and counts page mappings as the kernel's C(pages_sharing) does.
  - Pages KSM has already merged are reported from C(/proc/PID/ksm_stat) (RV(estimate.merged)).
  - Never writes anything, never stops, traces or pauses a process; a process that exits or
    changes its mappings during the scan is skipped or read as far as it goes.
  - Cost (measured on a 2-core VM, kernel 6.18, from 1 to 16 GiB of candidates) is about 1.1 to 1.8 s
    of CPU per GiB of anonymous memory read, with Python 2.7, 3.6 or 3.11 alike, at any O(sample) -
    every page is read and hashed, sampling bounds memory and the Python work per page, not the
    hashing. Estimator memory is bounded by O(max_entries) (about 200 bytes per entry, 13 MiB for the
    default) plus 1 MiB of read buffer, whatever the size of the host; the estimating process peaked
    at 30 to 43 MiB RSS, as much on 16 GiB of candidates as on 1 GiB.
    O(time_budget) bounds the wall time.
author:
  - samepage.ksm maintainers (@samepage)
extends_documentation_fragment:
  - samepage.ksm._attributes
  - samepage.ksm._attributes.info_module
  - samepage.ksm._attributes.platform
options:
  pids:
    description:
      - Process IDs to include.
    type: list
    elements: int
    default: []
  units:
    description:
      - systemd units or slices whose processes to include, for example V(mariadb.service),
        V(mariadb) (the suffix may be left out) or V(machine.slice).
    type: list
    elements: str
    default: []
  cgroups:
    description:
      - cgroup paths whose processes (including those of sub-cgroups) to include, as in
        C(/proc/PID/cgroup), for example V(/system.slice/httpd.service).
    type: list
    elements: str
    default: []
  containers:
    description:
      - Containers whose processes to include - a podman, docker or containerd container ID (at
        least 12 hex digits), its name where the engine's state file is readable, an LXC name or
        an OpenVZ/Virtuozzo CT ID.
    type: list
    elements: str
    default: []
  command:
    description:
      - A Python regular expression searched in each process's command line (arguments joined by
        spaces; the command name for processes without one).
    type: str
  min_size_mib:
    description:
      - Skip processes with less anonymous resident memory (C(RssAnon)) than this many MiB.
    type: int
    default: 1
  group_by:
    description:
      - How RV(estimate.groups) groups the candidates. V(group) by container, else systemd
        unit or slice, else V(host); V(process) one group per process.
    type: str
    choices: [group, process]
    default: group
  top_groups:
    description:
      - How many groups RV(estimate.groups) lists, highest estimated saving first. V(0) lists none.
    type: int
    default: 10
  sample:
    description:
      - Start by keeping the contents whose hash falls in a 1/O(sample) slice; a power of two.
        V(1) counts every content until the table is full.
    type: int
    default: 1
  max_entries:
    description:
      - Most page contents held in the sample table (its memory bound, about 200 bytes each).
        When it is full the sampled slice halves.
    type: int
    default: 65536
  time_budget:
    description:
      - Stop scanning after this many seconds and report what was read (RV(estimate.complete) is
        then V(false)).
    type: int
    default: 300
  use_zero_pages:
    description:
      - Estimate for C(use_zero_pages=1) (every zero page merges with the kernel's zero page) or
        C(0). When not set, the host's current knob value is used.
    type: bool
  max_page_sharing:
    description:
      - The C(max_page_sharing) to estimate for. When not set, the host's current knob value is used
        (256 when it cannot be read).
    type: int
  proc_path:
    description:
      - Where procfs is mounted.
    type: path
    default: /proc
  sysfs_path:
    description:
      - The KSM sysfs directory, read for the current C(use_zero_pages) and C(max_page_sharing).
    type: path
    default: /sys/kernel/mm/ksm
notes:
  - Needs root (C(become)) - reading another process's memory needs C(CAP_SYS_PTRACE) and the
    ptrace access check of C(/proc/PID/mem). Processes that cannot be read are counted in
    RV(estimate.unreadable_processes) and a warning.
  - Swapped-out pages are not read (KSM does not merge them either until they come back).
  - The module's own process is never a candidate.
seealso:
  - module: samepage.ksm.ksm_info
  - name: Kernel Samepage Merging
    description: The kernel's documentation of KSM and of its per-process statistics.
    link: https://docs.kernel.org/admin-guide/mm/ksm.html
'''

EXAMPLES = r'''
- name: How much would KSM save on this node (all processes above 16 MiB)?
  samepage.ksm.ksm_estimate:
    min_size_mib: 16
  become: true
  register: estimate

- name: Show it
  ansible.builtin.debug:
    msg: "KSM would save {{ estimate.estimate.saving_mib }} MiB ({{ estimate.estimate.saving_percent_of_ram }} % of RAM)"

- name: Only two services and one container, capped at 60 s
  samepage.ksm.ksm_estimate:
    units: [mariadb, httpd.service]
    containers: [web1]
    time_budget: 60
  become: true

- name: Per process, for every PHP worker
  samepage.ksm.ksm_estimate:
    command: 'php-fpm: pool'
    group_by: process
  become: true
'''

RETURN = r'''
estimate:
  description: The estimate for this host.
  returned: always
  type: dict
  contains:
    host:
      description: The host name.
      type: str
      sample: hn01.example.com
    page_size:
      description: Page size in bytes.
      type: int
      sample: 4096
    mem_total_bytes:
      description: C(MemTotal) of the host; V(null) when unreadable.
      type: int
      sample: 25217306624
    use_zero_pages:
      description: Whether the estimate assumes C(use_zero_pages=1).
      type: bool
      sample: false
    max_page_sharing:
      description: The C(max_page_sharing) the estimate assumes.
      type: int
      sample: 256
    candidates:
      description: Processes selected.
      type: int
      sample: 12
    scanned_processes:
      description: Candidates whose memory was read.
      type: int
      sample: 12
    vanished_processes:
      description: Candidates that ended before they could be read.
      type: int
      sample: 0
    unreadable_processes:
      description: Candidates whose memory could not be read (permission).
      type: int
      sample: 0
    unreadable_pages:
      description: Present pages that could not be read (unmapped while scanned).
      type: int
      sample: 0
    scanned_pages:
      description: Present anonymous pages read (the shared zero page excluded).
      type: int
      sample: 262144
    scanned_bytes:
      description: RV(estimate.scanned_pages) in bytes.
      type: int
      sample: 1073741824
    scanned_mib:
      description: RV(estimate.scanned_pages) in MiB.
      type: float
      sample: 1024.0
    zero_pages:
      description: Pages that hold only zeros (counted exactly).
      type: int
      sample: 1024
    shared_zero_pages:
      description: Mappings of the kernel's shared zero page (no memory to save; already merged by C(use_zero_pages) or never written).
      type: int
      sample: 17
    duplicate_pages:
      description: Estimated non-zero pages whose content has at least one other copy among the candidates.
      type: int
      sample: 131072
    saving_pages:
      description: Estimated pages KSM would save on the candidates (duplicates minus what stays as KSM pages, plus zero pages).
      type: int
      sample: 130560
    saving_bytes:
      description: RV(estimate.saving_pages) in bytes.
      type: int
      sample: 534773760
    saving_mib:
      description: RV(estimate.saving_pages) in MiB.
      type: float
      sample: 510.0
    saving_stderr_pages:
      description:
        - Standard error of RV(estimate.saving_pages) due to sampling (0 when every content was counted);
          the true saving lies within two of them of the estimate in about 95 % of runs.
      type: int
      sample: 210
    saving_stderr_mib:
      description: RV(estimate.saving_stderr_pages) in MiB.
      type: float
      sample: 0.82
    saving_percent_of_ram:
      description: RV(estimate.saving_bytes) as a percentage of C(MemTotal); V(null) when it is unknown.
      type: float
      sample: 2.12
    merged:
      description: What KSM has already merged on the candidates, from C(/proc/PID/ksm_stat).
      type: dict
      contains:
        merging_pages:
          description: Sum of C(ksm_merging_pages).
          type: int
        zero_pages:
          description: Sum of C(ksm_zero_pages).
          type: int
        profit_bytes:
          description: Sum of C(ksm_process_profit); V(null) when the kernel has none.
          type: int
    sample:
      description: The sampling that was used.
      type: dict
      contains:
        initial:
          description: O(sample).
          type: int
        final:
          description: The slice the estimate ended with (1/final of the contents counted); a power of two.
          type: int
        entries:
          description: Entries in the table at the end.
          type: int
        max_entries:
          description: O(max_entries).
          type: int
        heavy_contents:
          description: Contents kept out of turn because they had many copies (counted exactly from then on).
          type: int
    complete:
      description: Whether every candidate was read within O(time_budget).
      type: bool
      sample: true
    elapsed_seconds:
      description: Wall time of the scan.
      type: float
      sample: 1.52
    cpu_seconds:
      description: CPU time of the scan (user + system).
      type: float
      sample: 1.48
    cpu_seconds_per_gib:
      description: CPU time per GiB read; V(null) when nothing was read.
      type: float
      sample: 1.45
    group_count:
      description: Groups that had a candidate read.
      type: int
      sample: 4
    groups:
      description: Up to O(top_groups) groups, highest estimated saving first.
      type: list
      elements: dict
      contains:
        kind:
          description: V(container), V(lxc), V(openvz), V(unit), V(slice), V(host), or V(process) with O(group_by=process).
          type: str
        id:
          description: Container ID, LXC name, CT ID, unit or slice name, cgroup path (V(host)) or PID.
          type: str
        name:
          description: The container's name where known, the unit or the command name; V(null) otherwise.
          type: str
        runtime:
          description: V(podman), V(docker), V(containerd), V(lxc), V(openvz), V(systemd) or V(null).
          type: str
        processes:
          description: Candidates of the group that were read.
          type: int
        scanned_pages:
          description: Present anonymous pages read in the group.
          type: int
        zero_pages:
          description: Zero pages in the group.
          type: int
        duplicate_pages:
          description: Estimated non-zero pages of the group with a copy anywhere among the candidates.
          type: int
        saving_pages:
          description: The group's share of the estimated saving (each content's saving split by the group's copies).
          type: int
        saving_bytes:
          description: RV(estimate.groups[].saving_pages) in bytes.
          type: int
        saving_mib:
          description: RV(estimate.groups[].saving_pages) in MiB.
          type: float
        merging_pages:
          description: Pages of the group KSM already merged (C(ksm_merging_pages)).
          type: int
      sample: [{"kind": "container", "id": "ac6bb3b1b8b0...", "name": "web1", "runtime": "podman", "processes": 2,
                "scanned_pages": 65536, "zero_pages": 0, "duplicate_pages": 32768, "saving_pages": 16320,
                "saving_bytes": 66846720, "saving_mib": 63.75, "merging_pages": 0}]
'''

import os
import re
import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.samepage.ksm.plugins.module_utils._estimate import Selector, estimate, find_candidates, read_mem_total
from ansible_collections.samepage.ksm.plugins.module_utils._ksm import DEFAULT_SYSFS_PATH


def validate(params):
    """Every problem with the options, before anything is read."""
    errors = []
    for name, low, what in (('min_size_mib', 0, 'a number of MiB >= 0'), ('top_groups', 0, '0 (none) or a number of groups'),
                            ('max_entries', 16, 'a number of entries >= 16'), ('time_budget', 1, 'a number of seconds >= 1')):
        if params[name] < low:
            errors.append('%s: invalid value %d; expected %s' % (name, params[name], what))
    sample = params['sample']
    if sample < 1 or sample & (sample - 1) or sample > 1 << 30:
        errors.append('sample: invalid value %d; expected a power of two from 1 to 1073741824 (1, 2, 4, 8, ...)' % sample)
    if params['max_page_sharing'] is not None and params['max_page_sharing'] < 2:
        errors.append('max_page_sharing: invalid value %d; expected an integer >= 2' % params['max_page_sharing'])
    bad_pids = [p for p in params['pids'] if p < 1]
    if bad_pids:
        errors.append('pids: invalid value(s) %s; expected process IDs >= 1' % ', '.join(str(p) for p in bad_pids))
    for name in ('units', 'cgroups', 'containers'):
        if any(not item or not item.strip() for item in params[name]):
            errors.append('%s: an empty name; expected non-empty names' % name)
    if any(not c.startswith('/') for c in params['cgroups'] if c):
        errors.append('cgroups: expected absolute cgroup paths as in /proc/PID/cgroup (starting with /), got %s'
                      % ', '.join(c for c in params['cgroups'] if c and not c.startswith('/')))
    if params['command'] is not None:
        try:
            re.compile(params['command'])
        except re.error as exc:
            errors.append('command: invalid regular expression %r: %s' % (params['command'], exc))
    return errors


def _knob(sysfs_path, name):
    try:
        with open(os.path.join(sysfs_path, name)) as handle:
            return int(handle.read().split()[0])
    except (IOError, OSError, ValueError, IndexError):
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pids=dict(type='list', elements='int', default=[]),
            units=dict(type='list', elements='str', default=[]),
            cgroups=dict(type='list', elements='str', default=[]),
            containers=dict(type='list', elements='str', default=[]),
            command=dict(type='str'),
            min_size_mib=dict(type='int', default=1),
            group_by=dict(type='str', choices=['group', 'process'], default='group'),
            top_groups=dict(type='int', default=10),
            sample=dict(type='int', default=1),
            max_entries=dict(type='int', default=65536),
            time_budget=dict(type='int', default=300),
            use_zero_pages=dict(type='bool'),
            max_page_sharing=dict(type='int'),
            proc_path=dict(type='path', default='/proc'),
            sysfs_path=dict(type='path', default=DEFAULT_SYSFS_PATH),
        ),
        supports_check_mode=True,
    )
    params = module.params
    errors = validate(params)
    if errors:
        module.fail_json(msg='; '.join(errors))

    use_zero = params['use_zero_pages']
    if use_zero is None:
        use_zero = _knob(params['sysfs_path'], 'use_zero_pages') == 1
    sharing = params['max_page_sharing'] or _knob(params['sysfs_path'], 'max_page_sharing') or 256

    selector = Selector(pids=params['pids'], units=params['units'], cgroups=params['cgroups'],
                        containers=params['containers'], command=params['command'],
                        min_bytes=params['min_size_mib'] * 1024 * 1024, exclude=[os.getpid()])
    candidates, denied = find_candidates(params['proc_path'], selector, group_by=params['group_by'])
    result = estimate(candidates, proc_path=params['proc_path'], use_zero_pages=use_zero, max_page_sharing=sharing,
                      sample=params['sample'], max_entries=params['max_entries'], time_budget=params['time_budget'],
                      top=params['top_groups'], mem_total=read_mem_total(os.path.join(params['proc_path'], 'meminfo')))
    try:
        result['host'] = socket.gethostname()
    except (IOError, OSError):
        result['host'] = None
    unreadable = denied + result['unreadable_processes']
    if unreadable:
        module.warn('%d processes could not be read (reading other processes\' memory needs root: use become)' % unreadable)
    if not result['complete']:
        module.warn('time_budget of %d s ran out: the estimate covers only the %d processes read (%s MiB)'
                    % (params['time_budget'], result['scanned_processes'], result['scanned_mib']))
    if not candidates:
        module.warn('no process matched the selection; the estimate is empty')
    module.exit_json(changed=False, estimate=result)


if __name__ == '__main__':
    main()
