# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What hosts tell each other through etcd besides the lock: which agents are alive, and the
recent extends (so a host where an LV is also active can refresh it, and sltv_info can show them).

Keys, under the lock prefix (default ``/sltv``), JSON values:

* ``<prefix>/agents/<host>``: one per running agent, on the agent's lease (gone when it dies).
* ``<prefix>/extends/<vg>/<disk>``: the last extend of a disk (host, time, size, seconds), on a
  lease of EXTEND_RECORD_TTL seconds, so that only recent ones are listed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

EXTEND_RECORD_TTL = 3600


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
