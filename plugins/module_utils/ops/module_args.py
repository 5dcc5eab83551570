# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the modules share: the lock options (doc fragment sltv.core.lock) and error handling."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import os
import re
import shlex
import socket
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.sltv.core.plugins.module_utils.infra.config_files import load_host_config
from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import LOCK_SETTINGS_DEFAULTS, MIN_LOCK_TTL, make_vg_lock
from ansible_collections.sltv.core.plugins.module_utils.model.host_config import HOST_CONFIG_PATH
from ansible_collections.sltv.core.plugins.module_utils.model.settings import check_lock_combination
from ansible_collections.sltv.core.plugins.module_utils.errors import LockError, SltvError, ValidationError

# No defaults here: an option left out takes the host config's value, else LOCK_SETTINGS_DEFAULTS'
# (sltv_module fills them in), so a module cannot tell a given default from an omitted option.
LOCK_ARGUMENT_SPEC = dict(
    lock_backend=dict(type="str", choices=["local", "etcd"]),
    etcd_endpoints=dict(type="list", elements="str"),
    etcd_ca_cert=dict(type="path"),
    etcd_cert=dict(type="path"),
    etcd_key=dict(type="path", no_log=False),
    etcd_user=dict(type="str"),
    etcd_password=dict(type="str", no_log=True),
    lock_timeout=dict(type="float"),
    lock_ttl=dict(type="int"),
    lock_prefix=dict(type="str"),
    host_config=dict(type="path", default=HOST_CONFIG_PATH),
)


def lock_settings(params):
    return dict((key, params.get(key)) for key in LOCK_SETTINGS_DEFAULTS)


def lock_factory(params, vg, tool):
    """Return a function that builds a fresh VG lock; the holder names this host, tool and pid."""
    settings = lock_settings(params)
    holder = "%s:%s:%d" % (socket.gethostname(), tool, os.getpid())
    return lambda: make_vg_lock(settings, vg, holder)


def check_lock_params(params):
    """Return an error message for lock settings that make no sense, or None."""
    timeout = params.get("lock_timeout")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        return "lock_timeout must be a finite number of seconds greater than 0, got %r" % (timeout,)
    if params.get("lock_ttl") is not None and params["lock_ttl"] < MIN_LOCK_TTL:
        return "lock_ttl must be at least %d seconds (the lease is refreshed every lock_ttl/3)" % MIN_LOCK_TTL
    try:
        check_lock_combination(params, where=None)
    except ValidationError as exc:
        return "%s (as options, or in the host config)" % exc
    return None


def apply_host_config(module, default_vg):
    """Fill the lock options left out (and ``vg`` when ``default_vg``) from the host config
    (option host_config), else from the built-in defaults; explicit options win."""
    params = module.params
    try:
        host = load_host_config(params["host_config"])
    except SltvError as exc:
        module.fail_json(msg="%s on host %s: %s (fix the file or give host_config=/dev/null)"
                         % (module._name, host_name(), exc))
    params.update(host.lock_over(lock_settings(params), LOCK_SETTINGS_DEFAULTS))
    if default_vg and params.get("vg") is None:
        if not host.vg:
            module.fail_json(msg="%s on host %s: vg is required: give vg=<name>, or set vg in the host config %s%s"
                             % (module._name, host_name(), host.path,
                                "" if host.found else " (there is none: the role sltv.core.sltv_host writes it)"))
        params["vg"] = host.vg


def sltv_module(argument_spec, check_lock=True, default_vg=False, **kwargs):
    """AnsibleModule with the lock options added (left-out ones from the host config), check mode
    on, and bad lock settings refused. ``default_vg``: the module's ``vg`` defaults to the host
    config's."""
    spec = dict(argument_spec)
    spec.update(LOCK_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True, **kwargs)
    apply_host_config(module, default_vg)
    problem = check_lock_params(module.params) if check_lock else None
    if problem:
        module.fail_json(msg=problem)
    if check_lock and module.params.get("lock_backend") == "etcd":
        check_etcd_settings(module)
    return module


def check_etcd_settings(module):
    """The etcd client library and the connection settings (certificate files, credentials), checked
    before anything runs, also when the run turns out to need no lock (nothing contacts etcd here)."""
    # Imported here: the etcd client (requests, etcd3gw) is 0.17 s of a local-backend module's start.
    from ansible_collections.sltv.core.plugins.module_utils.infra import etcd_client

    if etcd_client.ETCD3GW_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("etcd3gw", reason="for lock_backend=etcd"),
                         exception=str(etcd_client.ETCD3GW_IMPORT_ERROR))
    try:
        etcd_client.validate_connection_settings(lock_settings(module.params))
    except LockError as exc:
        module.fail_json(msg="lock_backend=etcd: %s" % (exc,))


def require_libvirt(module):
    """Fail the way Ansible's modules do when the libvirt Python bindings are missing."""
    try:
        import libvirt  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        module.fail_json(msg=missing_required_lib("libvirt-python", reason="to manage libvirt domains "
                                                  "(Debian/Ubuntu and EL: package python3-libvirt)"),
                         exception=traceback.format_exc())


def host_name():
    """This host's name as the modules write it into tags and errors."""
    return socket.gethostname()


def run_or_fail(module, where, runner, action, result=None):
    """Run ``action()``; any error fails the module with a message that starts with ``where``.

    ``result`` (an OpResult) tells what had been done before the error: the failure then reports
    ``changed=true`` and ``done``, so handlers fire and the run does not read as clean."""
    try:
        return action()
    except SltvError as exc:
        module.fail_json(**_failure(module, where, str(exc), runner, result))
    except Exception as exc:  # pylint: disable=broad-except  # any surprise must still fail cleanly
        module.fail_json(exception=traceback.format_exc(),
                         **_failure(module, where, "unexpected error: %s" % exc, runner, result))


_NOTHING_CHANGED = re.compile(r"\s*[.;]?\s*nothing was changed\.?", re.IGNORECASE)


def _failure(module, where, message, runner, result):
    done = list(result.done) if result is not None else []
    if done:
        # A lock or lvm error says "nothing was changed" of its own step; the run did change things.
        message = "%s. %s" % (_NOTHING_CHANGED.sub("", message).rstrip(". "), result.partial())
    return dict(msg="%s: %s" % (where, message), changed=bool(done), done=done,
                **command_output(module, runner.commands, failed=True))


def command_output(module, commands, failed=False):
    """What a result says of the commands that ran (``commands`` of the runner, argv lists).

    Always ``command_count`` (how many ran). At verbosity >= 1 (``-v``) also ``commands``, the full
    list; at verbosity 0 a failure gives ``last_command`` instead (the last command that ran, one
    shell-quoted string, left out when none ran): the list is most of a default run's output."""
    output = dict(command_count=len(commands))
    if module._verbosity >= 1:
        output["commands"] = [list(argv) for argv in commands]
    elif failed and commands:
        output["last_command"] = " ".join(shlex.quote(str(arg)) for arg in commands[-1])
    return output


def exit_with(module, result, runner, header, diff=None, **output):
    """Warnings, then exit_json with what every module returns (``changed``, ``actions``,
    ``command_count``, at -v ``commands``, ``lock_wait``), ``output``, and in diff mode ``diff`` =
    (before, after)."""
    for warning in result.warnings:
        module.warn(warning)
    output.update(changed=result.changed, actions=result.actions, lock_wait=round(result.lock_wait, 6),
                  **command_output(module, runner.commands))
    if module._diff and diff is not None:
        output["diff"] = dict(before=diff[0], after=diff[1], before_header=header, after_header=header)
    module.exit_json(**output)
