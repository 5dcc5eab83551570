# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What hosts tell each other through etcd besides the lock: which agents are alive (and what they
cannot do), and the recent extends (so a host where an LV is also active can refresh it, and
sltv_info can show them).

Keys, under the lock prefix (default ``/sltv``), JSON values:

* ``<prefix>/agents/<host>``: one per running agent: host, pid, start time, disks watched, its VGs,
  ``vgs_missing`` (configured VGs it does not see) and ``degraded`` (why it cannot do all its work:
  a VG missing, etcd unreachable; empty when it can). The same status goes, whatever the lock
  backend, to the host's ``/run/sltv/agent-status.json`` (``agent.agent_status``).
* ``<prefix>/extends/<vg>/<disk>``: the last extend of a disk by an agent (host, time, size,
  seconds). An agent on another host where that LV is active (a live migration) runs
  ``lvchange --refresh`` on it at its next sweep.

Both kinds live on the agent's one lease, which its VG locks take too (``etcd_lock.process_lease``:
``lock_ttl``, kept alive by its own thread; granted again only when it was lost during an etcd
outage): they go when the agent stops or dies, and nothing accumulates in etcd (there is no lease
per extend any more). Requests
fail over to the next member of ``etcd_endpoints`` (``etcd_client``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json


def agent_key(prefix, host):
    return "%s/agents/%s" % (prefix.rstrip("/"), host)


def extend_key(prefix, vg, disk):
    return "%s/extends/%s/%s" % (prefix.rstrip("/"), vg, disk)


def _records(client, prefix):
    records = []
    for kv in client.get_prefix(prefix):
        try:
            value = json.loads(kv["value"].decode("utf-8"))
        except ValueError:
            continue  # not ours to interpret
        if isinstance(value, dict):
            value["key"] = kv["key"].decode("utf-8", "replace")
            records.append(value)
    return records


def live_agents(client, prefix):
    return _records(client, "%s/agents/" % prefix.rstrip("/"))


def recent_extends(client, prefix):
    return _records(client, "%s/extends/" % prefix.rstrip("/"))
