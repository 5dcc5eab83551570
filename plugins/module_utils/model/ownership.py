# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one ownership rule: who may act on a disk, from which host, and what they may do.

A disk belongs to the domain(s) and host(s) named in its claims: ``sltv_attached`` tags whose value
is ``<host>:<domain uuid>:<mode>:<domain name>`` (mode ``exclusive`` or ``shareable``; the name is
kept only to be readable, the UUID is the identity). Tags of sltv 1.0 (``<host>:<uuid>``) read as
exclusive claims. Attach, detach, extend, delete, the libvirt hook and the agent all ask
``decide()``; nothing else looks at claims to allow an operation. Pure logic: no command runs here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.sltv.core.plugins.module_utils.errors import DiskStateError
from ansible_collections.sltv.core.plugins.module_utils.model import tags as T

EXCLUSIVE, SHAREABLE = "exclusive", "shareable"

# Operations that ask the rule.
ATTACH = "attach"          # a module attaches the disk to a domain of this host
DETACH = "detach"          # a module detaches it from a domain of this host
EXTEND = "extend"          # a module grows the disk (LV, guest size, qcow2 virtual size)
DELETE = "delete"          # a module removes the LV (wipe first)
ACTIVATE = "activate"      # the hook activates the LV for a domain starting on this host
AGENT_EXTEND = "agent_extend"  # the agent grows the LV under a domain running on this host
RECLAIM = "reclaim"        # the agent moves a claim to this host after a live migration
FORGET = "forget"          # a module drops the claims of a domain that is not defined on this host


class Claim(object):
    """One claim: domain ``uuid`` (named ``name``) on ``host``, ``mode`` exclusive or shareable."""

    def __init__(self, host, uuid, mode=EXCLUSIVE, name="", raw=None):
        self.host = host
        self.uuid = uuid
        self.mode = mode if mode in (EXCLUSIVE, SHAREABLE) else EXCLUSIVE
        self.name = name or ""
        self.raw = raw if raw is not None else self.value  # the tag value as stored (to delete it)

    @classmethod
    def parse(cls, value):
        """A decoded ``sltv_attached`` value; unknown or missing modes read as exclusive (safe)."""
        parts = value.split(":", 3)
        if len(parts) < 2:
            return cls("", value, raw=value)
        host, uuid = parts[0], parts[1]
        mode = parts[2] if len(parts) > 2 else EXCLUSIVE
        name = parts[3] if len(parts) > 3 else ""
        return cls(host, uuid, mode, name, raw=value)

    @property
    def value(self):
        return "%s:%s:%s:%s" % (self.host, self.uuid, self.mode, self.name)

    @property
    def exclusive(self):
        return self.mode != SHAREABLE

    def to_dict(self):
        return dict(host=self.host, domain_uuid=self.uuid, domain_name=self.name, mode=self.mode)

    def describe(self):
        who = "domain %s (%s)" % (self.name, self.uuid) if self.name else "domain %s" % (self.uuid or "?")
        return "%s on host %s%s" % (who, self.host or "?", "" if self.exclusive else ", shareable")

    def __eq__(self, other):
        return isinstance(other, Claim) and (self.host, self.uuid, self.mode) == (other.host, other.uuid, other.mode)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash((self.host, self.uuid, self.mode))

    def __repr__(self):
        return "Claim(%r)" % self.value


def claims_of(values):
    """Claims from the decoded values of a disk's ``sltv_attached`` tags."""
    return [Claim.parse(v) for v in values]


def claims_in_tags(lv_tags):
    """Claims of an LV, from its raw lvm tags."""
    return claims_of(T.parse_tags(lv_tags)[1].get(T.ATTACHED, []))


class Decision(object):
    """What the rule allows: ``stale`` claims to drop (the same domain, attached last on another host),
    ``claim`` to add (None if none), and ``owned_here`` (a claim names this host)."""

    def __init__(self, claim=None, stale=(), owned_here=False):
        self.claim = claim
        self.stale = list(stale)
        self.owned_here = owned_here


def decide(op, where, claims, host, domain_uuid=None, domain_name="", shareable=False, running_here=False,
           incoming=False, force=False):
    """Ask the rule whether ``op`` may run on a disk (``where`` names it in errors) from ``host``.

    ``claims``: the disk's claims, read under the VG lock for any operation that writes.
    ``domain_uuid``/``domain_name``: the domain of this host the operation is for (attach, detach,
    activate, agent_extend, reclaim). ``running_here``: that domain runs on this host now (its live
    XML has the disk). ``incoming``: the hook sees an incoming live migration. Raises DiskStateError,
    naming the owner and what to do, when the operation is not allowed.
    """
    mine = [c for c in claims if c.uuid == domain_uuid] if domain_uuid else []
    others = [c for c in claims if c not in mine]
    owned_here = any(c.host == host for c in claims)

    if op == ATTACH:
        mode = SHAREABLE if shareable else EXCLUSIVE
        if others and (not shareable or any(o.exclusive for o in others)):
            owner = [o for o in others if o.exclusive] or others
            raise DiskStateError(
                "%s is attached to %s: detach it there first%s" % (
                    where, owner[0].describe(),
                    "" if any(o.exclusive for o in others) or shareable else
                    ", or declare it shareable=true on every attachment"))
        elsewhere = [c for c in mine if c.host != host]
        if elsewhere and not running_here:
            raise DiskStateError(
                "%s is claimed by %s: the same domain, on another host. If the domain moved here by a "
                "live migration, the claim moves once it runs here; otherwise detach it on host %s first"
                % (where, elsewhere[0].describe(), elsewhere[0].host))
        wanted = Claim(host, domain_uuid, mode, domain_name)
        if wanted in mine:
            return Decision(stale=[c for c in mine if c != wanted and c.host != host], owned_here=True)
        same_here = [c for c in mine if c.host == host]
        if same_here:  # attached here already, in another mode: the attachment is not changed
            return Decision(owned_here=True)
        return Decision(claim=wanted, stale=elsewhere, owned_here=owned_here)

    if op == DETACH:
        return Decision(stale=mine, owned_here=owned_here)

    if op in (EXTEND, DELETE):
        remote = [c for c in claims if c.host != host]
        if op == DELETE and claims and not force:
            raise DiskStateError(
                "%s is attached to %s: detach it first (sltv.core.sltv_attachment state=absent), or set "
                "force=true to delete it anyway" % (where, "; ".join(c.describe() for c in claims)))
        if op == EXTEND and remote:
            raise DiskStateError(
                "%s is attached to %s: extend it there (delegate_to: %s), where the guest sees the new size "
                "and no other host touches an image its QEMU has open" % (where, remote[0].describe(), remote[0].host))
        return Decision(owned_here=owned_here)

    if op == ACTIVATE:
        if not claims:
            return Decision()  # attached by hand (virsh): sltv has no claim to protect
        if mine:
            if any(c.host == host for c in mine) or incoming:
                return Decision(owned_here=True)
            raise DiskStateError(
                "%s is claimed by %s, not this host: start the domain there, or live-migrate it (the claim "
                "follows the domain); if that host is gone, detach the disk with sltv.core.sltv_attachment "
                "on this host first" % (where, mine[0].describe()))
        if shareable and not any(o.exclusive for o in others):
            return Decision()
        raise DiskStateError("%s is attached to %s, not to this domain: refusing to activate it for %s"
                             % (where, others[0].describe(), domain_name or domain_uuid))

    if op in (AGENT_EXTEND, RECLAIM):
        if not running_here:
            raise DiskStateError("%s: no domain of this host runs it" % where)
        if claims and not mine:
            raise DiskStateError("%s runs in domain %s here but is claimed by %s: left alone"
                                 % (where, domain_name or domain_uuid, others[0].describe()))
        if op == RECLAIM:
            elsewhere = [c for c in mine if c.host != host]
            if not elsewhere:
                return Decision(owned_here=True)
            moved = Claim(host, domain_uuid, elsewhere[0].mode, domain_name or elsewhere[0].name)
            return Decision(claim=moved, stale=elsewhere, owned_here=False)
        return Decision(owned_here=owned_here)

    if op == FORGET:
        # domain_uuid/domain_name: what the user named (a name or a UUID); libvirt knows no such
        # domain here, so a claim of it naming this host is stale: the domain cannot run here.
        named = (domain_uuid or domain_name or "").lower()
        gone = [c for c in claims if named and named in ((c.uuid or "").lower(), (c.name or "").lower())]
        remote = [c for c in gone if c.host != host]
        if remote and not force:
            raise DiskStateError(
                "%s is claimed by %s, and no domain %s is defined on this host: detach it on host %s; if that host "
                "is gone for good (the domain will never run there again), force=true drops the claim here"
                % (where, remote[0].describe(), domain_name or domain_uuid, remote[0].host))
        return Decision(stale=gone, owned_here=any(c.host == host for c in gone))

    raise ValueError("unknown operation %r" % (op,))
