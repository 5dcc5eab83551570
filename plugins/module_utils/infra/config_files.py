# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading sltv's YAML files (the agent's configuration, the host config) with clear errors."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.model.host_config import (
    HOST_CONFIG_PATH, HostConfig, parse_host_config,
)

MISSING = object()  # read_yaml(missing_ok=True) of a file that does not exist (None is an empty file)


def read_yaml(path, what, missing_ok=False):
    """The document in ``path``; MISSING for a file that does not exist when ``missing_ok``."""
    try:
        with open(path) as handle:
            text = handle.read()
    except (IOError, OSError) as exc:
        if missing_ok and exc.errno == errno.ENOENT:
            return MISSING
        raise ValidationError("cannot read %s %s: %s" % (what, path, exc))
    try:
        import yaml  # pylint: disable=import-outside-toplevel  # python3-yaml, installed by sltv.core.sltv_host
    except ImportError:
        raise ValidationError("PyYAML is not installed (Debian: python3-yaml, EL: python3-pyyaml): it reads %s %s"
                              % (what, path))
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError("%s %s is not valid YAML: %s" % (what, path, exc))


def load_host_config(path=HOST_CONFIG_PATH):
    """The host config in ``path``; an empty one (``found`` false) when the file does not exist."""
    data = read_yaml(path, "the host config", missing_ok=True)
    if data is MISSING:
        return HostConfig(path, found=False)
    return parse_host_config(data, path)
