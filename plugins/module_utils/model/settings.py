# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of settings read from a YAML file (the agent's configuration, the host config).

Every error names the key and what it allows. YAML gives typed values, so the checks are strict:
``yes`` is not 1 second, ``"10"`` is not a number.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import LOCK_SETTINGS_DEFAULTS, MIN_LOCK_TTL

LOCK_BACKENDS = ("local", "etcd")
LOCK_TOGETHER = (("etcd_cert", "etcd_key"), ("etcd_user", "etcd_password"))


def check_unknown(data, allowed, where):
    unknown = sorted(str(key) for key in data if key not in allowed)
    if unknown:
        raise ValidationError("unknown %s %s; allowed: %s"
                              % (where, ", ".join(repr(k) for k in unknown), ", ".join(sorted(allowed))))


def check_string(value, key, secret=False):
    if not isinstance(value, str) or not value.strip():
        shown = "a %s" % type(value).__name__ if secret else repr(value)
        raise ValidationError("%s must be a non-empty string, got %s" % (key, shown))
    return value


def check_positive_number(value, key, unit="seconds"):
    # bool is an int in Python: "yes" in YAML must not become 1 second.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValidationError("%s must be a finite number of %s greater than 0, got %r" % (key, unit, value))
    return float(value)


def check_integer(value, key, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = "at least %d" % low if high is None else "from %d to %d" % (low, high)
        raise ValidationError("%s must be an integer %s, got %r" % (key, allowed, value))
    return value


def check_choice(value, key, choices):
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValidationError("%s must be one of %s, got %r" % (key, ", ".join(choices), value))
    return value.lower()


def check_lock_values(value, where="lock"):
    """The lock settings a mapping gives (a partial one is fine), each checked alone; keys left
    empty (None) are left out. Returns a new dict."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError("%s must be a mapping of lock settings (%s), got %r"
                              % (where, ", ".join(sorted(LOCK_SETTINGS_DEFAULTS)), value))
    check_unknown(value, LOCK_SETTINGS_DEFAULTS, "%s setting" % where)
    given = dict((key, item) for key, item in value.items() if item is not None)
    checked = {}
    for key, item in given.items():
        name = "%s.%s" % (where, key)
        if key == "lock_backend":
            checked[key] = check_choice(item, name, LOCK_BACKENDS)
        elif key == "etcd_endpoints":
            endpoints = [item] if isinstance(item, str) else item
            if not isinstance(endpoints, list) or not all(isinstance(e, str) and e.strip() for e in endpoints):
                raise ValidationError("%s must be a list of URLs like http://127.0.0.1:2379, got %r" % (name, item))
            checked[key] = list(endpoints)
        elif key == "lock_timeout":
            checked[key] = check_positive_number(item, name)
        elif key == "lock_ttl":
            # The lease is refreshed every lock_ttl/3 and etcd refuses shorter leases.
            checked[key] = check_integer(item, name, MIN_LOCK_TTL)
        else:
            checked[key] = check_string(item, name, secret=(key == "etcd_password"))
    return checked


def check_lock_combination(lock, where="lock"):
    """The checks that need the whole set of lock settings (``lock`` has every key); ``where``
    None names the keys bare, as the modules' options."""
    key = (lambda name: name) if where is None else (lambda name: "%s.%s" % (where, name))
    if lock.get("lock_backend") == "etcd" and not lock.get("etcd_endpoints"):
        raise ValidationError("%s needs at least one URL with lock_backend etcd" % key("etcd_endpoints"))
    for first, second in LOCK_TOGETHER:
        if (lock.get(first) is None) != (lock.get(second) is None):
            raise ValidationError("%s and %s must be given together" % (key(first), key(second)))
