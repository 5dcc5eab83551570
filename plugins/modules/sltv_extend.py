#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sltv_extend
short_description: Grow sltv disks, and the running guests' view of them
version_added: 1.0.0
description:
  - Grows a disk made by sltv.core.sltv_disk. Nothing is ever shrunk; a smaller size is an error.
  - A V(thick) disk's LV is extended under the VG lock (C(lvextend)), then every running domain on
    this host that uses the disk is told the new size (libvirt C(blockResize)), so the guest sees it.
  - A V(thin) disk's virtual size (what the guest sees) grows through QEMU while a domain runs it
    here, or with C(qemu-img resize) otherwise, and the C(sltv_vsize) tag follows. Its LV keeps
    growing on demand through the sltv agent; O(physical) grows it ahead of time.
  - A disk claimed by a domain on another host is refused; run the task on that host.
  - The extend is decided on the VG as it is under the VG lock (read again there), and the guest
    resize and the tag change run in the same critical section, so concurrent extends from several
    hosts all count (O(delta) included) and an absolute O(size) reached meanwhile is not an error.
author:
  - sltv.core developers (@sltv-core)
extends_documentation_fragment:
  - sltv.core.lock
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows the LV size and the virtual size before and after.
  platform:
    platforms: posix
options:
  disk:
    description: Disk name (the LV name).
    type: str
    required: true
  vg:
    description:
      - Volume group that holds the disk.
      - Left out, the C(vg) of the host config (O(host_config)); one of the two is required.
    type: str
  size:
    description:
      - New size that the guest sees, absolute. Thick disks round up to the VG extent size, thin
        disks to 512 bytes. Idempotent; a size below the current one is an error.
      - Bytes or a number with a binary unit (V(60G), V(1.5T)).
    type: str
  delta:
    description:
      - "Grow by this much, relative to the current size (V(10G) or V(+10G), as C(lvextend -L +10G)).
        B(Not idempotent): every run grows the disk again. Use O(size) in playbooks that run more than once."
      - Concurrent delta extends from several hosts all count (each is decided under the VG lock).
    type: str
  physical:
    description:
      - Thin disks only. Grow the LV to at least this size now (rounded up to the extent size), at
        most 1.1 times the virtual size.
    type: str
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
notes:
  - Runs on the hypervisor. Needs lvm2, qemu-img for thin disks that no domain runs, and libvirt's
    Python bindings when the disk is attached.
seealso:
  - module: sltv.core.sltv_disk
  - module: sltv.core.sltv_attachment
"""

EXAMPLES = r"""
- name: Grow a thick disk to 80 GiB; the running guest sees the new size at once
  sltv.core.sltv_extend:
    disk: web01-data
    vg: vg_san
    size: 80G

- name: Grow a thin disk's virtual size to 500 GiB and its LV to 20 GiB now
  sltv.core.sltv_extend:
    disk: db01-data
    vg: vg_san
    size: 500G
    physical: 20G
    lock_backend: etcd
    etcd_endpoints: [https://etcd1.example.com:2379]

- name: Add 10 GiB (runs again add 10 GiB again)
  sltv.core.sltv_extend:
    disk: web01-data
    vg: vg_san
    delta: 10G
"""

RETURN = r"""
size:
  description: LV size in bytes after the run.
  returned: always
  type: int
  sample: 85899345920
virtual_size:
  description: Size in bytes that the guest sees after the run.
  returned: always
  type: int
  sample: 85899345920
size_human:
  description: O(size) of the result for reading - binary units, two decimals at most.
  returned: always
  type: str
  sample: 80 GiB
virtual_size_human:
  description: The virtual size for reading.
  returned: always
  type: str
  sample: 80 GiB
guests:
  description: Running domains on this host that use the disk, with the capacity they see after the run.
  returned: always
  type: list
  elements: dict
  sample: [{domain: web01, target: vdb, capacity: 85899345920}]
actions:
  description: What was done (in check mode, would be done), in order.
  returned: always
  type: list
  elements: str
  sample: [lvextend, resize_guest, tag_vsize]
command_count:
  description:
    - How many lvm2 commands ran (the reads included).
    - The commands themselves are in RV(commands), returned only with C(-v).
  returned: always
  type: int
  sample: 3
commands:
  description:
    - The lvm2 commands that ran, as argv lists.
    - Only with C(-v) (verbosity 1 or more), on success and on failure; without it the result has
      RV(command_count) and, on failure, RV(last_command).
  returned: with -v (verbosity >= 1)
  type: list
  elements: list
  sample: [[lvextend, -L, 85899345920b, vg_san/web01-data]]
last_command:
  description:
    - On a failure without C(-v), the last lvm2 command that ran, as one shell-quoted line.
    - Left out when no command had run. With C(-v) the failure has the full RV(commands) instead.
  returned: on failure without -v, when a command had run
  type: str
  sample: lvm fullreport --reportformat json vg_san
lock_wait:
  description: Seconds spent waiting for the VG lock.
  returned: always
  type: float
  sample: 0.002
"""

from ansible_collections.sltv.core.plugins.module_utils.ops.extend import ExtendResult, ExtendSpec, ensure_extended
from ansible_collections.sltv.core.plugins.module_utils.infra.libvirt_domain import Hypervisor
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import human
from ansible_collections.sltv.core.plugins.module_utils.ops.module_args import (
    exit_with, host_name, lock_factory, run_or_fail, sltv_module,
)


def main():
    argument_spec = dict(
        disk=dict(type="str", required=True),
        vg=dict(type="str"),  # else the host config's (sltv_module)
        size=dict(type="str"),
        delta=dict(type="str"),
        physical=dict(type="str"),
        uri=dict(type="str", default="qemu:///system"),
    )
    module = sltv_module(argument_spec, default_vg=True, mutually_exclusive=[["size", "delta"]],
                         required_one_of=[["size", "delta", "physical"]])
    params = module.params

    host = host_name()
    runner = LvmRunner()
    where = "sltv_extend %s/%s on host %s" % (params["vg"], params["disk"], host)
    partial = ExtendResult()

    def action():
        spec = ExtendSpec(params["disk"], params["vg"], size=params["size"], delta=params["delta"],
                          physical=params["physical"])
        return ensure_extended(spec, runner, lambda: Hypervisor(params["uri"]),
                               lock_factory(params, spec.vg, "sltv_extend"), host, module.check_mode, partial)

    result = run_or_fail(module, where, runner, action, partial)
    exit_with(module, result, runner, "%s/%s" % (params["vg"], params["disk"]), (result.before, result.after),
              size=result.after["size"], virtual_size=result.after["virtual_size"],
              size_human=human(result.after["size"]), virtual_size_human=human(result.after["virtual_size"]),
              guests=result.guests)


if __name__ == "__main__":
    main()
