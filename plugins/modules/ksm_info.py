#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ksm_info
short_description: Report KSM (kernel same-page merging) state and the memory it saves
version_added: 1.0.0
description:
  - Reads every knob and counter in the KSM sysfs directory and computes the memory saved,
    C(general_profit), and the sharing ratios (C(pages_sharing / pages_shared),
    C(pages_unshared / pages_sharing)).
  - Finds whether the kernel supports KSM (C(CONFIG_KSM) in the kernel's build configuration),
    whether the C(ksmd) kernel thread runs and how much CPU time it has used.
  - Optionally lists the processes that profit most from KSM, from C(/proc/PID/ksm_stat)
    (or C(/proc/PID/ksm_merging_pages) on kernels older than 6.1).
  - A host without the KSM sysfs directory is not a failure; the result says C(available=false)
    and why.
  - Never changes anything.
author:
  - samepage.ksm maintainers (@samepage)
extends_documentation_fragment:
  - samepage.ksm._attributes
  - samepage.ksm._attributes.info_module
  - samepage.ksm._attributes.platform
options:
  sysfs_path:
    description:
      - The KSM sysfs directory to read.
    type: path
    default: /sys/kernel/mm/ksm
  top_processes:
    description:
      - How many processes to list, those with the highest KSM profit first.
      - C(0) lists none and skips the scan of every process.
      - Reading other users' processes needs root (C(become)); unreadable ones are counted in a warning.
    type: int
    default: 0
  proc_path:
    description:
      - Where procfs is mounted; C(ksmd) and the processes are looked up there.
    type: path
    default: /proc
  kernel_config_paths:
    description:
      - Kernel build configuration files to search for C(CONFIG_KSM), first readable one wins.
        Gzip-compressed files (such as C(/proc/config.gz)) are recognised by their content.
      - When not set, C(/boot/config-RELEASE) (RELEASE being C(uname -r)) and then C(/proc/config.gz).
    type: list
    elements: path
notes:
  - C(saved_bytes) is C((pages_sharing + ksm_zero_pages) * page_size), the memory KSM merged away.
    C(general_profit) (kernel 6.1 and later) also subtracts the memory KSM's own metadata costs.
seealso:
  - module: samepage.ksm.ksm_sysfs
  - name: Kernel Samepage Merging
    description: The kernel's documentation of every KSM knob and counter.
    link: https://docs.kernel.org/admin-guide/mm/ksm.html
'''

EXAMPLES = r'''
- name: Read KSM state and savings
  samepage.ksm.ksm_info:
  register: ksm_state

- name: Show the memory saved
  ansible.builtin.debug:
    msg: "KSM saves {{ ksm_state.ksm.saved_mib }} MiB on {{ ksm_state.ksm.host }}"
  when: ksm_state.ksm.available

- name: The five processes that profit most (reading their statistics needs root)
  samepage.ksm.ksm_info:
    top_processes: 5
  become: true
  register: ksm_top
'''

RETURN = r'''
ksm:
  description: KSM state of the host.
  returned: always
  type: dict
  contains:
    available:
      description: Whether the KSM sysfs directory exists and could be read.
      type: bool
      sample: true
    reason:
      description: Why KSM is not available; V(null) when it is.
      type: str
      sample: /sys/kernel/mm/ksm does not exist, the kernel lacks KSM, or this is a container that cannot see it
    sysfs_path:
      description: The directory that was read.
      type: str
      sample: /sys/kernel/mm/ksm
    knobs:
      description: Every tunable knob present, as the kernel reports it (C(advisor_mode) without brackets).
      type: dict
      sample: {"run": 1, "pages_to_scan": 100, "sleep_millisecs": 20, "advisor_mode": "none"}
    counters:
      description: Every read-only entry present (C(pages_shared), C(pages_sharing), C(full_scans), C(general_profit), ...).
      type: dict
      sample: {"pages_shared": 2, "pages_sharing": 16382, "pages_unshared": 0, "full_scans": 4, "general_profit": 66846720}
    page_size:
      description: The page size of the host, in bytes.
      type: int
      sample: 4096
    saved_bytes:
      description: Memory saved, C((pages_sharing + ksm_zero_pages) * page_size); V(null) when KSM is not available.
      type: int
      sample: 67100672
    saved_mib:
      description: RV(ksm.saved_bytes) in MiB, two decimals.
      type: float
      sample: 63.99
    general_profit_bytes:
      description: The kernel's C(general_profit) (savings minus KSM metadata); V(null) on kernels without it.
      type: int
      sample: 66846720
    general_profit_mib:
      description: RV(ksm.general_profit_bytes) in MiB, two decimals.
      type: float
      sample: 63.75
    sharing_ratio:
      description: C(pages_sharing / pages_shared), how many sites share each KSM page; V(null) when C(pages_shared) is 0.
      type: float
      sample: 8191.0
    unshared_ratio:
      description: C(pages_unshared / pages_sharing), high values mean wasted scanning; V(null) when C(pages_sharing) is 0.
      type: float
      sample: 0.0
    kernel:
      description: Kernel support for KSM.
      type: dict
      contains:
        config_ksm:
          description: The value of C(CONFIG_KSM) (V(y) or V(n)); V(null) when no configuration file was readable.
          type: str
          sample: y
        config_source:
          description: The file C(config_ksm) was read from.
          type: str
          sample: /proc/config.gz
        release:
          description: The running kernel release (C(uname -r)).
          type: str
          sample: 6.1.0-18-amd64
    ksmd:
      description: The C(ksmd) kernel thread.
      type: dict
      contains:
        running:
          description: Whether the thread exists (it sleeps while C(run) is 0).
          type: bool
          sample: true
        pid:
          description: Its process id; V(null) when not found.
          type: int
          sample: 37
        cpu_seconds:
          description: CPU time it has used since boot (user + system), in seconds.
          type: float
          sample: 12.5
    top_processes:
      description: Up to O(top_processes) processes taking part in KSM, highest profit first.
      type: list
      elements: dict
      contains:
        pid:
          description: Process id.
          type: int
        comm:
          description: Command name.
          type: str
        merging_pages:
          description: Pages of the process that KSM merged.
          type: int
        profit_bytes:
          description: The kernel's C(ksm_process_profit); V(null) on kernels before 6.1.
          type: int
        merge_any:
          description: Whether the whole process opted in (C(prctl(PR_SET_MEMORY_MERGE))); V(null) when unknown.
          type: bool
        mergeable:
          description: Whether the process has mergeable memory areas; V(null) when unknown.
          type: bool
      sample: [{"pid": 4242, "comm": "mysqld", "merging_pages": 8192, "profit_bytes": 33161216, "merge_any": true, "mergeable": true}]
    host:
      description: The host name of the managed host.
      type: str
      sample: hn01.example.com
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.samepage.ksm.plugins.module_utils._ksm import DEFAULT_SYSFS_PATH
from ansible_collections.samepage.ksm.plugins.module_utils._ksm_info import gather


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sysfs_path=dict(type='path', default=DEFAULT_SYSFS_PATH),
            top_processes=dict(type='int', default=0),
            proc_path=dict(type='path', default='/proc'),
            kernel_config_paths=dict(type='list', elements='path'),
        ),
        supports_check_mode=True,
    )
    top = module.params['top_processes']
    if top < 0:
        module.fail_json(msg='top_processes: invalid value %d; expected 0 (none) or a positive number of processes' % top)

    info, warnings = gather(
        sysfs_path=module.params['sysfs_path'],
        proc_path=module.params['proc_path'],
        top=top,
        config_paths=module.params['kernel_config_paths'],
    )
    for warning in warnings:
        module.warn(warning)
    module.exit_json(changed=False, ksm=info)


if __name__ == '__main__':
    main()
