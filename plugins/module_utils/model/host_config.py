# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host config (``/etc/sltv/sltv.yml``, written by the role sltv.core.sltv_host): the defaults
of every module and of the agent on this host, so that an ad-hoc call needs no lock options.

An option given to a module wins over the file, the file over the built-in default. Unknown keys
and bad values are errors: a typo must not leave a host silently on the local lock.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.model.names import validate_vg_name
from ansible_collections.sltv.core.plugins.module_utils.model.settings import check_lock_values, check_unknown

HOST_CONFIG_PATH = "/etc/sltv/sltv.yml"
HOST_CONFIG_KEYS = ("vg", "lock")


class HostConfig(object):
    """``vg``: the default VG or None; ``lock``: the lock settings the file gives (a partial dict)."""

    def __init__(self, path, vg=None, lock=None, found=True):
        self.path = path
        self.vg = vg
        self.lock = dict(lock or {})
        self.found = found

    def lock_over(self, given, defaults):
        """Lock settings: ``given`` (None = not given) over the file over ``defaults``."""
        merged = dict(defaults)
        merged.update(self.lock)
        merged.update((key, value) for key, value in given.items() if value is not None)
        if merged.get("etcd_endpoints") is not None:
            merged["etcd_endpoints"] = list(merged["etcd_endpoints"])  # never the defaults' own list
        return merged


def parse_host_config(data, path=HOST_CONFIG_PATH):
    """A HostConfig from the loaded YAML document; ValidationError names the file and the key."""
    try:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValidationError("must be a mapping with the keys %s, got %s"
                                  % (", ".join(HOST_CONFIG_KEYS), type(data).__name__))
        check_unknown(data, HOST_CONFIG_KEYS, "key")
        vg = data.get("vg")
        if vg is not None:
            try:
                validate_vg_name(vg)
            except ValidationError as exc:
                raise ValidationError("vg: %s" % exc)
        return HostConfig(path, vg=vg, lock=check_lock_values(data.get("lock"), "lock"))
    except ValidationError as exc:
        raise ValidationError("host config %s: %s" % (path, exc))
