#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sltv_disk
short_description: Create and delete VM disks (thick or thin) on a shared LVM volume group
version_added: 1.0.0
description:
  - Creates or deletes a VM disk as a logical volume (LV) of a volume group (VG) that one or more
    libvirt/QEMU-KVM hypervisors share.
  - A V(thick) disk is a raw LV of the full size. A V(thin) disk is a qcow2 image written directly
    onto a small LV that the sltv agent grows before the guest runs out of space, up to
    1.1 times the virtual size.
  - The disk's facts live in the VG metadata itself, as LV tags that every host reads. Every LV the
    collection creates carries the tag C(sltv); an LV without it is never changed or removed.
  - Every change to the VG metadata runs inside a VG lock (see O(lock_backend)). The lock is taken
    only when a change is needed, and the state is read again once it is held, so that
    concurrent runs from several hosts create a disk exactly once.
  - New LVs are created inactive with autoactivation off, so they are active only on the host that
    runs their domain.
  - A present disk of another size or kind is an error, never a silent change. Growing a disk is
    the job of sltv.core.sltv_extend.
  - "Data of deleted disks: a new disk never shows a guest the data of a disk deleted before it,
    because deleting wipes the LV by default (O(wipe=zero)). A thin disk only ever shows what was
    written through its qcow2 image; its LV is wiped on delete too, so that a later thick disk on
    the same extents does not expose it."
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
    details: The diff shows the disk (kind, sizes, tags) before and after.
  platform:
    platforms: posix
options:
  name:
    description:
      - Disk name, which is also the LV name.
      - 1 to 127 characters out of C(A-Z a-z 0-9 + _ . -), not starting with C(-), not C(.) or
        C(..), not starting with C(snapshot) or C(pvmove), and not containing lvm2's reserved parts
        such as C(_mlog), C(_rimage) or C(_tdata).
    type: str
    required: true
  vg:
    description:
      - Name of the volume group that holds the disk.
      - Left out, the C(vg) of the host config (O(host_config)); one of the two is required.
    type: str
  state:
    description: Whether the disk should exist.
    type: str
    choices: [present, absent]
    default: present
  provisioning:
    description:
      - V(thick) is a raw LV of the full O(size).
      - V(thin) is a qcow2 image of virtual size O(size) on an LV of O(initial_size) that grows on
        demand. Thin disks are never placed in an lvm2 thin pool, because a thin pool can be active
        on one host only.
    type: str
    choices: [thick, thin]
    default: thick
  size:
    description:
      - Size that the guest sees. For a thick disk the LV size, rounded up to the VG extent size;
        for a thin disk the qcow2 virtual size, rounded up to 512 bytes.
      - Bytes, or a number with a binary unit, for example V(512M), V(50G), V(50GiB) or V(1.5T);
        K, M, G, T and P are powers of 1024, with or without C(B)/C(iB).
      - Required to create a disk. For an existing disk it is compared with the disk. A disk
        bigger than O(size) (grown by M(sltv.core.sltv_extend) or the agent since it was created)
        is left as it is, with a warning, so the play that created it replays cleanly; disks are
        never shrunk. A disk smaller than O(size) is an error (grow it with M(sltv.core.sltv_extend)).
    type: str
    aliases: [virtual_size]
  initial_size:
    description:
      - Thin disks only. Size of the LV when the disk is created, rounded up to the VG extent size
        and capped at 1.1 times the virtual size.
      - Defaults to one extend chunk of the agent, 1 GiB.
    type: str
  wipe:
    description:
      - How the LV's data is destroyed when O(state=absent), before the LV is removed.
      - V(zero) writes zeros (C(blkdiscard --zeroout), which storage that supports WRITE ZEROES
        offloads). Afterwards nothing of the old disk is readable by a later disk.
      - V(discard) only unmaps the blocks; storage may still return old data afterwards.
      - V(none) removes the LV as it is; a later thick disk on the same extents may show its data
        to a guest.
      - If a wipe is interrupted, the disk is left tagged C(sltv_state=deleting) and the next
        O(state=absent) run finishes it.
    type: str
    choices: [zero, discard, none]
    default: zero
  force:
    description:
      - Delete a disk even if its tags record it as attached to a domain (on this or another host).
      - An LV that is open on this host is never removed, even with O(force=true).
    type: bool
    default: false
notes:
  - Runs on the hypervisor. Needs lvm2, and qemu-img (package qemu-utils) for thin disks, and the
    Python package etcd3gw for O(lock_backend=etcd).
  - Writing the qcow2 header of a thin disk, and wiping, activate the LV on this host for the time
    it takes and deactivate it again; on an lvmlockd VG the activation is exclusive.
seealso:
  - name: lvmlockd(8)
    description: Storage-enforced locking of shared VGs with sanlock.
    link: https://man7.org/linux/man-pages/man8/lvmlockd.8.html
"""

EXAMPLES = r"""
- name: Create a 50 GiB thick disk
  sltv.core.sltv_disk:
    name: web01-data
    vg: vg_san
    size: 50G

- name: Create a thin disk of 200 GiB that starts at 2 GiB, locked through etcd
  sltv.core.sltv_disk:
    name: db01-data
    vg: vg_san
    provisioning: thin
    size: 200G
    initial_size: 2G
    lock_backend: etcd
    etcd_endpoints:
      - https://etcd1.example.com:2379
      - https://etcd2.example.com:2379
    etcd_ca_cert: /etc/sltv/etcd-ca.pem
    etcd_cert: /etc/sltv/etcd-client.pem
    etcd_key: /etc/sltv/etcd-client-key.pem

- name: Delete a disk, zeroing its data first (the default)
  sltv.core.sltv_disk:
    name: web01-data
    vg: vg_san
    state: absent
"""

RETURN = r"""
disk:
  description:
    - The disk after the run (in check mode, as it would be). C(exists) is false when it is absent.
  returned: always
  type: dict
  contains:
    name:
      description: Disk and LV name.
      type: str
      sample: web01-data
    vg:
      description: Volume group.
      type: str
      sample: vg_san
    exists:
      description: Whether the disk exists.
      type: bool
      sample: true
    path:
      description: Device path of the LV (present while the LV is active on a host).
      type: str
      sample: /dev/vg_san/web01-data
    kind:
      description: V(thick) or V(thin).
      type: str
      sample: thick
    format:
      description: Disk format the guest's driver uses, V(raw) for thick or V(qcow2) for thin.
      type: str
      sample: raw
    size:
      description: LV size in bytes (for a thin disk, the space it takes in the VG now).
      type: int
      sample: 53687091200
    virtual_size:
      description: Size in bytes that the guest sees.
      type: int
      sample: 53687091200
    size_human:
      description: The LV size for reading (binary units, two decimals at most).
      type: str
      sample: 50 GiB
    virtual_size_human:
      description: The virtual size for reading.
      type: str
      sample: 50 GiB
    initialized:
      description: False while a thin disk's qcow2 header has not been written yet.
      type: bool
      sample: true
    attachments:
      description: Attachments recorded in the LV tags, as C(host:domain-uuid).
      type: list
      elements: str
      sample: []
    lv_tags:
      description: The LV's tags.
      type: list
      elements: str
      sample: [sltv, sltv_kind=thick, sltv_format=raw, sltv_vsize=53687091200]
  sample:
    name: web01-data
    vg: vg_san
    exists: true
    path: /dev/vg_san/web01-data
    kind: thick
    format: raw
    size: 53687091200
    virtual_size: 53687091200
    size_human: 50 GiB
    virtual_size_human: 50 GiB
    initialized: true
    attachments: []
    lv_tags: [sltv, sltv_kind=thick, sltv_format=raw, sltv_vsize=53687091200]
actions:
  description: What was done (or, in check mode, would be done), in order.
  returned: always
  type: list
  elements: str
  sample: [create, write_header]
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
  sample: [[lvm, fullreport, --reportformat, json, vg_san]]
last_command:
  description:
    - On a failure without C(-v), the last lvm2 command that ran, as one shell-quoted line.
    - Left out when no command had run. With C(-v) the failure has the full RV(commands) instead.
  returned: on failure without -v, when a command had run
  type: str
  sample: lvm fullreport --reportformat json vg_san
lock_wait:
  description: Seconds spent waiting for the VG lock (0 when no lock was needed).
  returned: always
  type: float
  sample: 0.004
"""

from ansible_collections.sltv.core.plugins.module_utils.model.disk import DiskSpec
from ansible_collections.sltv.core.plugins.module_utils.ops.disk_ops import DiskResult, ensure_disk
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner
from ansible_collections.sltv.core.plugins.module_utils.ops.module_args import (
    exit_with, host_name, lock_factory, run_or_fail, sltv_module,
)


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        vg=dict(type="str"),  # else the host config's (sltv_module)
        state=dict(type="str", default="present", choices=["present", "absent"]),
        provisioning=dict(type="str", default="thick", choices=["thick", "thin"]),
        size=dict(type="str", aliases=["virtual_size"]),
        initial_size=dict(type="str"),
        wipe=dict(type="str", default="zero", choices=["zero", "discard", "none"]),
        force=dict(type="bool", default=False),
    )
    module = sltv_module(argument_spec, default_vg=True)
    params = module.params

    runner = LvmRunner()
    host = host_name()
    # Every error names the disk and the host, for ad-hoc runs and AWX logs alike.
    where = "sltv_disk %s/%s on host %s" % (params["vg"], params["name"], host)
    partial = DiskResult()

    def action():
        spec = DiskSpec(params["name"], params["vg"], state=params["state"], provisioning=params["provisioning"],
                        size=params["size"], initial_size=params["initial_size"], wipe=params["wipe"],
                        force=params["force"])
        return ensure_disk(spec, runner, lock_factory(params, spec.vg, "sltv_disk"), module.check_mode, host,
                           partial)

    result = run_or_fail(module, where, runner, action, partial)
    exit_with(module, result, runner, "%s/%s" % (params["vg"], params["name"]), (result.before, result.after),
              disk=result.after)


if __name__ == "__main__":
    main()
