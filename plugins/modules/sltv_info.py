#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sltv_info
short_description: Show sltv disks, their attachments and the capacity of the volume groups
version_added: 1.0.0
description:
  - Reads, never changes. Lists the disks made by sltv.core.sltv_disk (kind, format, LV size,
    virtual size, attachments from the LV tags), and for each volume group its size, free space and
    over-commit ratio (the sum of the disks' virtual sizes divided by the VG size).
  - For domains that run on this host, adds the target and what QEMU reports (capacity, allocation
    = the highest offset written, physical size).
  - With O(lock_backend=etcd), also lists the sltv agents that are alive and the recent extends
    they recorded.
author:
  - sltv.core developers (@sltv-core)
extends_documentation_fragment:
  - sltv.core.lock
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module never changes anything.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  vg:
    description: Only these volume groups (default all that this host sees).
    type: list
    elements: str
  disk:
    description: Only this disk.
    type: str
  domain:
    description: Only disks attached to this domain (name or UUID; a name only matches domains of this host).
    type: str
  uri:
    description: libvirt connection URI. If libvirt does not answer, the result has no local domains and a warning.
    type: str
    default: qemu:///system
notes:
  - The O(lock_timeout) and O(lock_ttl) options are not used; no lock is taken.
seealso:
  - module: sltv.core.sltv_disk
"""

EXAMPLES = r"""
- name: Everything on this host's view of the shared VG
  sltv.core.sltv_info:
    vg: [vg_san]
  register: sltv

- name: Disks of one domain, with live agents and recent extends from etcd
  sltv.core.sltv_info:
    domain: web01
    lock_backend: etcd
    etcd_endpoints: [https://etcd1.example.com:2379]
"""

RETURN = r"""
disks:
  description: The sltv disks (after the filters), sorted by VG and name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Disk name.
      type: str
    vg:
      description: Volume group.
      type: str
    path:
      description: The LV's device path.
      type: str
    kind:
      description: V(thick) or V(thin).
      type: str
    format:
      description: V(raw) or V(qcow2).
      type: str
    size:
      description: LV size in bytes.
      type: int
    virtual_size:
      description: Size in bytes that the guest sees.
      type: int
    size_human:
      description: The LV size for reading (binary units, two decimals at most).
      type: str
    virtual_size_human:
      description: The virtual size for reading.
      type: str
    initialized:
      description: False while a thin disk's qcow2 header has not been written yet.
      type: bool
    active_here:
      description: Whether the LV is active on this host.
      type: bool
    attached:
      description:
        - The disk's claims, from its LV tags - host, domain_uuid, domain_name, mode (V(exclusive) or
          V(shareable)), and here (the claim is this host's).
        - The raw LV tags are not listed; M(sltv.core.sltv_disk) returns them for one disk.
      type: list
      elements: dict
    local_domains:
      description: >-
        Domains of this host that have the disk, one entry per domain and target - domain,
        domain_uuid, target, bus, live (the running domain has it), persistent (its saved definition
        has it), and when live capacity, allocation and physical in bytes.
      type: list
      elements: dict
  sample:
    - name: web01-data
      vg: vg_san
      path: /dev/vg_san/web01-data
      kind: thin
      format: qcow2
      size: 2147483648
      virtual_size: 53687091200
      size_human: 2 GiB
      virtual_size_human: 50 GiB
      initialized: true
      active_here: true
      attached: [{host: hv1, domain_uuid: 7c1a4a1e-8f0c-4b59-9b1e-2f1d4c7e8a11, domain_name: web01, mode: exclusive, here: true}]
      local_domains: [{domain: web01, target: vdb, live: true, persistent: true, capacity: 53687091200, allocation: 1073741824}]
vgs:
  description:
    - Per volume group, sizes in bytes and the over-commit ratio.
    - C(size_human), C(free_human), C(allocated_human) and C(virtual_human) give the sizes for reading.
    - C(metadata_size), C(metadata_free) (bytes; lvm uses at most half of the area), C(metadata_used_percent) and
      C(disks_more) (about how many more disks it holds) describe the metadata area; a warning says when less
      than 20 % of it is free. New disks are refused while less than 5 % is free.
  returned: always
  type: list
  elements: dict
  sample: [{name: vg_san, size: 4398046511104, free: 1099511627776, disks: 12, allocated: 3298534883328,
            virtual: 6597069766656, overcommit: 1.5, lock_type: none, extent_size: 4194304,
            size_human: 4 TiB, free_human: 1 TiB, allocated_human: 3 TiB, virtual_human: 6 TiB}]
agents:
  description: Agents alive in etcd (O(lock_backend=etcd) only).
  returned: when O(lock_backend=etcd)
  type: list
  elements: dict
  sample: [{host: hv1, pid: 812, key: /sltv/agents/hv1}]
extends:
  description: Recent extends recorded in etcd (O(lock_backend=etcd) only).
  returned: when O(lock_backend=etcd)
  type: list
  elements: dict
  sample: [{host: hv1, vg: vg_san, disk: web01-data, size: 3221225472, seconds: 0.41}]
"""

from ansible_collections.sltv.core.plugins.module_utils.errors import SltvError
from ansible_collections.sltv.core.plugins.module_utils.ops.info import gather
from ansible_collections.sltv.core.plugins.module_utils.infra.libvirt_domain import Hypervisor
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner
from ansible_collections.sltv.core.plugins.module_utils.ops.module_args import (
    host_name, lock_settings, run_or_fail, sltv_module,
)


def _etcd_records(params):
    # Imported here so that the local backend needs no etcd client installed.
    from ansible_collections.sltv.core.plugins.module_utils.infra import cluster_state, etcd_client

    client = etcd_client.connect(lock_settings(params))
    try:
        prefix = params["lock_prefix"]
        return cluster_state.live_agents(client, prefix), cluster_state.recent_extends(client, prefix)
    finally:
        client.close()


def main():
    argument_spec = dict(
        vg=dict(type="list", elements="str"),
        disk=dict(type="str"),
        domain=dict(type="str"),
        uri=dict(type="str", default="qemu:///system"),
    )
    module = sltv_module(argument_spec, check_lock=False)  # takes no lock
    params = module.params
    host = host_name()
    runner = LvmRunner()
    where = "sltv_info on host %s" % host
    warnings = []

    def action():
        try:
            hypervisor = Hypervisor(params["uri"])
        except SltvError as exc:
            warnings.append("no local domain details: %s" % exc)
            hypervisor = None
        try:
            return gather(runner, host, hypervisor, vgs=params["vg"], disk=params["disk"], domain=params["domain"])
        finally:
            if hypervisor is not None:
                hypervisor.close()

    disks, vgs, gather_warnings = run_or_fail(module, where, runner, action)
    output = dict(changed=False, disks=disks, vgs=vgs)
    if params["lock_backend"] == "etcd":
        output["agents"], output["extends"] = run_or_fail(module, where, runner, lambda: _etcd_records(params))
    for warning in warnings + gather_warnings:
        module.warn(warning)
    module.exit_json(**output)


if __name__ == "__main__":
    main()
