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
  - Optionally reports how the host looks as a KSM node (O(node_checks)) - is the KSM sysfs writable
    here, is systemd the init, which other KSM controllers are present (C(ksmtuned), C(ksm.service),
    an active C(tuned) profile that writes KSM knobs, C(rc.local) lines outside the samepage.ksm block).
    It only reports them; M(samepage.ksm.ksm_sysfs) acts on them (its O(samepage.ksm.ksm_sysfs#module:competing)
    option) and verifies what it wrote.
  - Never changes anything, never fails because of what it found.
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
  top_groups:
    description:
      - How many groups of processes to list as RV(ksm.top_groups), those with the highest KSM
        profit first. A group is a container (podman, docker, containerd, LXC, OpenVZ/Virtuozzo CT),
        else a systemd unit or slice, else the host, derived from C(/proc/PID/cgroup).
      - Container names come from the engines' state files where readable (podman's
        C(containers.json), docker's C(config.v2.json)); no engine command is run.
      - C(0) lists none and skips the scan of every process. Reading other users' processes needs root.
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
  node_checks:
    description:
      - Also probe the host as a KSM node and return the result as RV(ksm.node) (report only).
    type: bool
    default: false
  rc_local_path:
    description:
      - The C(rc.local) file that O(node_checks) searches for lines that write KSM knobs outside the samepage.ksm block.
    type: path
    default: /etc/rc.local
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

- name: Which other KSM controllers are on this node (report only)
  samepage.ksm.ksm_info:
    node_checks: true
  become: true
  register: ksm_node

- name: List them
  ansible.builtin.debug:
    msg: "{{ ksm_node.ksm.node.competing | map(attribute='detail') | list }}"
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
    top_groups:
      description: Up to O(top_groups) containers, units or slices taking part in KSM, highest profit first.
      type: list
      elements: dict
      contains:
        kind:
          description: V(container), V(lxc), V(openvz), V(unit), V(slice) or V(host) (processes in no container or unit).
          type: str
        id:
          description: Container ID, LXC name, CT ID, unit or slice name, or the cgroup path for V(host).
          type: str
        name:
          description: The container's name where its engine's state file says it (the unit name for units); V(null) otherwise.
          type: str
        runtime:
          description: V(podman), V(docker), V(containerd), V(lxc), V(openvz), V(systemd), or V(null) when unknown.
          type: str
        processes:
          description: Processes of the group taking part in KSM.
          type: int
        merging_pages:
          description: Sum of the processes' C(ksm_merging_pages).
          type: int
        profit_bytes:
          description: Sum of the processes' C(ksm_process_profit); V(null) on kernels before 6.1.
          type: int
      sample: [{"kind": "container", "id": "ac6bb3b1b8b0...", "name": "web1", "runtime": "podman", "processes": 3,
                "merging_pages": 8192, "profit_bytes": 33161216}]
    host:
      description: The host name of the managed host.
      type: str
      sample: hn01.example.com
    node:
      description: The node probe (O(node_checks)).
      returned: when O(node_checks) is true
      type: dict
      contains:
        sysfs_writable:
          description: Whether C(run) in the KSM sysfs directory is writable here.
          type: bool
        systemd:
          description: Whether systemd is the init system (C(/run/systemd/system) and C(systemctl)).
          type: bool
        competing:
          description: Other KSM controllers found.
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
        enabled_units:
          description: samepage.ksm systemd units (of the systemd persistence backend) enabled here.
          type: list
          elements: str
          sample: [samepage-ksm.service]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.samepage.ksm.plugins.module_utils._ksm import DEFAULT_SYSFS_PATH
from ansible_collections.samepage.ksm.plugins.module_utils._groups import top_groups
from ansible_collections.samepage.ksm.plugins.module_utils._ksm_info import gather
from ansible_collections.samepage.ksm.plugins.module_utils._node_checks import probe


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sysfs_path=dict(type='path', default=DEFAULT_SYSFS_PATH),
            top_processes=dict(type='int', default=0),
            top_groups=dict(type='int', default=0),
            proc_path=dict(type='path', default='/proc'),
            kernel_config_paths=dict(type='list', elements='path'),
            node_checks=dict(type='bool', default=False),
            rc_local_path=dict(type='path', default='/etc/rc.local'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params['top_processes'] < 0:
        module.fail_json(msg='top_processes: invalid value %d; expected 0 (none) or a positive number of processes'
                         % params['top_processes'])
    if params['top_groups'] < 0:
        module.fail_json(msg='top_groups: invalid value %d; expected 0 (none) or a positive number of groups'
                         % params['top_groups'])

    info, warnings = gather(
        sysfs_path=params['sysfs_path'],
        proc_path=params['proc_path'],
        top=params['top_processes'],
        config_paths=params['kernel_config_paths'],
    )
    info['top_groups'], denied = top_groups(params['proc_path'], params['top_groups'], info['page_size'])
    if denied:
        warnings.append('cgroups or KSM statistics of %d processes were not readable (they need root: use become)' % denied)
    for warning in warnings:
        module.warn(warning)

    if params['node_checks']:
        systemctl_bin = module.get_bin_path('systemctl')
        systemctl = None
        if systemctl_bin:
            def systemctl(argv):
                return module.run_command([systemctl_bin] + argv, environ_update={'LC_ALL': 'C'})
        try:
            info['node'] = probe(params['sysfs_path'], params['rc_local_path'], systemctl=systemctl,
                                 proc_path=params['proc_path'])
        except OSError as exc:
            module.warn('node checks incomplete: %s' % exc)
            info['node'] = None

    module.exit_json(changed=False, ksm=info)


if __name__ == '__main__':
    main()
