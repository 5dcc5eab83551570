# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Options of the cluster-wide VG lock, shared by every module that changes VG metadata.
    DOCUMENTATION = r"""
options:
  lock_backend:
    description:
      - Where the VG lock that serialises changes to the VG metadata is held.
      - V(local) uses a lock file per VG under C(/run/lock/sltv/). It is safe only when a single
        host changes the VG (a loop-backed VG, or one hypervisor). No etcd is needed.
      - V(etcd) holds the lock in etcd so that every host sharing the VG is serialised. The lock
        lives on a lease of O(lock_ttl) seconds; before every lvm command the module checks that
        the lease is still held with time to spare, and fails without running the command if it
        is not (fencing).
      - etcd can only fence what goes through etcd. A tool that changes the VG without this lock
        (a hand-run lvcreate) is not stopped. Fencing is timing-based - the check right before each
        lvm command needs max(1 s, O(lock_ttl)/3) of lease left, so it stops a holder that stalled
        before the check, not one that stalls between the check and the command. Where the storage
        itself must enforce exclusion, use an lvmlockd (sanlock) VG as well.
      - A VG that declares a backend (tag C(sltv_lock=etcd), set by the role sltv.core.sltv_host or by
        sltv.core.sltv_vg) refuses a run with a weaker one, before any change.
      - Left out, C(lock.lock_backend) of the host config (O(host_config)), else V(local).
    type: str
    choices: [local, etcd]
  etcd_endpoints:
    description:
      - etcd client URLs, tried in order, for example V(https://etcd1.example.com:2379).
      - Used when O(lock_backend=etcd).
      - Left out, C(lock.etcd_endpoints) of the host config, else V(http://127.0.0.1:2379).
    type: list
    elements: str
  etcd_ca_cert:
    description: CA certificate file that signed the etcd server certificates (HTTPS endpoints).
    type: path
  etcd_cert:
    description: Client certificate file for etcd TLS client authentication. Requires O(etcd_key).
    type: path
  etcd_key:
    description: Private key file of O(etcd_cert).
    type: path
  etcd_user:
    description: etcd user name, when etcd authentication is enabled. Requires O(etcd_password).
    type: str
  etcd_password:
    description: Password of O(etcd_user). Never logged.
    type: str
  lock_timeout:
    description:
      - Seconds to wait for the VG lock (and for etcd to answer) before failing without changing
        anything.
      - Left out, C(lock.lock_timeout) of the host config, else V(60).
    type: float
  lock_ttl:
    description:
      - Lease time to live in seconds of the etcd lock; refreshed every O(lock_ttl)/3 seconds.
        A holder that stalls longer than this loses the lock and is fenced.
      - At least 2.
      - Left out, C(lock.lock_ttl) of the host config, else V(10).
    type: int
  lock_prefix:
    description:
      - Prefix of every etcd key the collection writes, so that several clusters can share one
        etcd. The VG lock key is C(<lock_prefix>/locks/vg/<vg>).
      - Left out, C(lock.lock_prefix) of the host config, else V(/sltv).
    type: str
  host_config:
    description:
      - The host config on the managed host, written by the role sltv.core.sltv_host - YAML with the
        keys C(vg) (the default C(vg) of sltv.core.sltv_disk, sltv.core.sltv_attachment and
        sltv.core.sltv_extend) and C(lock) (a mapping with the names of the lock options above as
        keys, for example C(lock_backend), C(etcd_endpoints), C(etcd_ca_cert)).
      - Every lock option left out takes its value from the file, so that an ad-hoc call such as
        C(ansible hv1 -m sltv.core.sltv_disk -a 'name=web01-data size=50G') uses the cluster's
        etcd lock and VG. An option given to the module wins over the file.
      - A missing file is fine (the built-in defaults apply); a file with an unknown key or a bad
        value fails the module before anything runs. V(/dev/null) ignores the host config.
    type: path
    default: /etc/sltv/sltv.yml
"""
