# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A connected etcd v3 client (JSON gRPC gateway, through etcd3gw) built from the lock settings.

What this adds to etcd3gw:

* several endpoints tried in order, the first healthy one (it answers and knows a leader) wins;
  a request that cannot reach the member in use is sent to the next one (failover): leases,
  keys and revisions live in the cluster, so a held lock and its lease survive losing a member;
* TLS files checked before use, so a wrong path is named instead of a cryptic SSL error;
* user/password authentication (etcd3gw has none): POST /v3/auth/authenticate gives a token sent
  as the Authorization header; a request refused for an invalid/expired token is retried once
  after authenticating again;
* a timeout on every request (etcd3gw's default is to wait forever);
* small helpers building base64 transaction bodies, and a bounded watch for a key's deletion;
* the requests themselves go over one kept-alive ``http.client`` connection per client: half the
  time and a quarter of the CPU of a requests session per request (requests stays for the watch
  streams, the health check and authentication);
* a pool of idle connected clients per process (``pooled_client``/``give_back``): a process that
  takes many locks (the agent, a benchmark) reuses its checked HTTP connections instead of
  connecting and checking the endpoint's health for each lock (two requests and a TCP handshake).

Needs etcd >= 3.4 (the gateway is served under /v3/).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import http.client
import json
import os
import re
import select
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from ansible_collections.sltv.core.plugins.module_utils.errors import LockError

try:
    import requests
    from etcd3gw import exceptions as etcd3gw_exceptions
    from etcd3gw.client import Etcd3Client

    ETCD3GW_IMPORT_ERROR = None
except ImportError as _exc:  # etcd3gw missing, or too new for this Python (2.7.0 needs >= 3.10)
    requests = None
    etcd3gw_exceptions = None
    Etcd3Client = object
    ETCD3GW_IMPORT_ERROR = _exc

DEFAULT_PORT = 2379
# Upper bound of one HTTP request; callers pass lower ones to stay within their own deadlines.
REQUEST_TIMEOUT = 5.0
API_PATH = "/v3/"

_INVALID_TOKEN_MARKERS = ("invalid auth token", "auth token is expired")
# Idle clients kept per process and settings: one per thread that takes locks at the same time
# (the agent: one worker per VG, the lock releases, the keepalives) is plenty.
POOL_SIZE = 8


def http_error(status):
    """The etcd3gw exception class for an HTTP status (as etcd3gw maps them), None for 200."""
    if status == 200:
        return None
    by_status = {
        500: etcd3gw_exceptions.InternalServerError,
        503: etcd3gw_exceptions.ConnectionFailedError,
        408: etcd3gw_exceptions.ConnectionTimeoutError,
        504: etcd3gw_exceptions.ConnectionTimeoutError,
        412: etcd3gw_exceptions.PreconditionFailedError,
    }
    return by_status.get(status, etcd3gw_exceptions.Etcd3Exception)


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------


def parse_endpoint(url):
    """'https://host:2379' -> ('https', 'host', 2379). Raises LockError on anything else."""
    if not isinstance(url, str) or not url.strip():
        raise LockError("etcd_endpoints: empty or non-string endpoint %r" % (url,))
    text = url.strip()
    match = re.match(r"^(https?)://(\[[0-9A-Fa-f:.]+\]|[^:/\[\]@\s]+)(?::(\d{1,5}))?/?\Z", text)
    if not match:
        raise LockError(
            "etcd_endpoints: %r is not an etcd client URL; use http://HOST:PORT or https://HOST:PORT" % (text,)
        )
    protocol, host, port = match.group(1), match.group(2), match.group(3)
    host = host.strip("[]")  # etcd3gw adds the brackets back for IPv6 addresses
    port = int(port) if port else DEFAULT_PORT
    if not 0 < port < 65536:
        raise LockError("etcd_endpoints: bad port in %r" % (text,))
    return protocol, host, port


def parse_endpoints(endpoints):
    """A list of endpoint URLs (a comma-separated string is accepted too), each checked."""
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    if not endpoints:
        raise LockError("etcd_endpoints is empty: give at least one URL like http://127.0.0.1:2379")
    result = []
    for url in endpoints:
        parse_endpoint(url)
        result.append(url.strip().rstrip("/"))
    return result


def check_readable_file(path, setting):
    """Raise LockError naming the setting and the file unless ``path`` is a readable file."""
    if not isinstance(path, str) or not path:
        raise LockError("%s must be a file path, got %r" % (setting, path))
    if not os.path.exists(path):
        raise LockError("%s: file %s does not exist" % (setting, path))
    if not os.path.isfile(path):
        raise LockError("%s: %s is not a regular file" % (setting, path))
    if not os.access(path, os.R_OK):
        raise LockError("%s: file %s is not readable by uid %d" % (setting, path, os.getuid()))
    return path


def tls_files(settings):
    """(ca_cert, cert, key) from the settings, each checked; None where not set."""
    ca_cert = settings.get("etcd_ca_cert") or None
    cert = settings.get("etcd_cert") or None
    key = settings.get("etcd_key") or None
    if bool(cert) != bool(key):
        raise LockError("etcd_cert and etcd_key go together: set both (client certificate auth) or neither")
    for value, setting in ((ca_cert, "etcd_ca_cert"), (cert, "etcd_cert"), (key, "etcd_key")):
        if value:
            check_readable_file(value, setting)
    return ca_cert, cert, key


def credentials(settings):
    """(user, password) or (None, None)."""
    user = settings.get("etcd_user") or None
    password = settings.get("etcd_password")
    if password is not None and not user:
        raise LockError("etcd_password is set but etcd_user is not")
    if user and password is None:
        raise LockError("etcd_user %s is set but etcd_password is not" % (user,))
    return user, (password if user else None)


def validate_connection_settings(settings):
    """Check every connection setting without contacting etcd (raises LockError)."""
    if ETCD3GW_IMPORT_ERROR is not None:
        raise LockError(
            "the etcd lock backend needs the Python package etcd3gw, which cannot be imported here: %s"
            % (ETCD3GW_IMPORT_ERROR,)
        )
    endpoints = parse_endpoints(settings.get("etcd_endpoints"))
    ca_cert, cert, key = tls_files(settings)
    user, password = credentials(settings)
    return endpoints, ca_cert, cert, key, user, password


# ---------------------------------------------------------------------------------------------
# transaction bodies (the gateway wants bytes fields base64-encoded)
# ---------------------------------------------------------------------------------------------


def b64(data):
    if not isinstance(data, bytes):
        data = str(data).encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def unb64(text):
    return base64.b64decode(text or "")


def compare_create_revision(key, revision, result="EQUAL"):
    """Compare clause: create_revision(key) <result> revision (0 means 'the key does not exist')."""
    return {"key": b64(key), "target": "CREATE", "result": result, "create_revision": int(revision)}


def compare_value(key, value):
    """Compare clause: value(key) == value (false when the key does not exist)."""
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def request_put(key, value, lease=None):
    body = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = int(lease)
    return {"request_put": body}


def request_range(key):
    return {"request_range": {"key": b64(key)}}


def request_delete(key):
    return {"request_delete_range": {"key": b64(key)}}


def txn_body(compare, success, failure=None):
    return {"compare": list(compare), "success": list(success), "failure": list(failure or [])}


def txn_succeeded(response):
    # proto3 JSON leaves out false booleans: no "succeeded" means it failed.
    return bool(response.get("succeeded", False))


def header_revision(response):
    return int(response.get("header", {}).get("revision", 0))


def first_range_kv(response):
    """The first key of the first range response of a txn, decoded; None if the range was empty."""
    for item in response.get("responses", []):
        kvs = item.get("response_range", {}).get("kvs", [])
        if kvs:
            return decode_kv(kvs[0])
    return None


def decode_kv(kv):
    """Gateway KeyValue -> dict with bytes key/value and int revisions/lease."""
    return {
        "key": unb64(kv.get("key")),
        "value": unb64(kv.get("value")),
        "create_revision": int(kv.get("create_revision", 0)),
        "mod_revision": int(kv.get("mod_revision", 0)),
        "version": int(kv.get("version", 0)),
        "lease": int(kv.get("lease", 0)),
    }


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


# requests/urllib3 wrap the real reason in several layers of text; these find it.
_REASONS = (
    (re.compile(r"\[Errno -?\d+\] ([^'\")]+)"), "%s"),
    (re.compile(r"(\[SSL[^\]]*\][^'\"()]*)"), "TLS error: %s"),
    (re.compile(r"(EOF occurred in violation of protocol)"), "TLS error: %s"),
    (re.compile(r"Read timed out\. \(read timeout=([0-9.]+)"), "no answer (read timeout %.5s s)"),
    (re.compile(r"(timed out)"), "%s"),
    (re.compile(r"(Remote end closed connection without response)"), "%s"),
    (re.compile(r"(Connection reset by peer)"), "%s"),
)


def short_reason(text):
    """The innermost reason of a requests/urllib3 error text, or the text itself."""
    for pattern, template in _REASONS:
        match = pattern.search(text)
        if match:
            return template % match.group(1).strip()
    return text


def describe_error(exc):
    """A short one-line text for an etcd3gw/requests exception (etcd3gw's str() is often empty)."""
    detail = getattr(exc, "detail_text", None)
    if detail:
        try:
            body = json.loads(detail)
            detail = body.get("message") or body.get("error") or detail
        except (ValueError, AttributeError):
            detail = short_reason(detail)
        text = detail
    else:
        text = short_reason(str(exc)) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def is_invalid_token_error(exc):
    text = (getattr(exc, "detail_text", None) or str(exc) or "").lower()
    return any(marker in text for marker in _INVALID_TOKEN_MARKERS)


def etcd_errors():
    """The exception classes a request to etcd may raise (network, HTTP, gateway, bad JSON)."""
    return (etcd3gw_exceptions.Etcd3Exception, requests.exceptions.RequestException, OSError, ValueError, KeyError)


class EndpointError(LockError):
    """One endpoint cannot be used. ``permanent``: retrying will not help (TLS or credentials)."""

    def __init__(self, message, permanent=False):
        super(EndpointError, self).__init__(message)
        self.permanent = permanent


# ---------------------------------------------------------------------------------------------
# the client
# ---------------------------------------------------------------------------------------------


class EtcdClient(Etcd3Client):
    """etcd3gw's client with timeouts, TLS checks, user/password auth and failover.

    ``endpoint`` is the member in use; ``endpoints`` (default: that one alone) the cluster's
    members, tried in turn when the one in use cannot be reached."""

    def __init__(self, endpoint, ca_cert=None, cert=None, key=None, user=None, password=None,
                 timeout=REQUEST_TIMEOUT, endpoints=None):
        protocol, host, port = parse_endpoint(endpoint)
        super(EtcdClient, self).__init__(
            host=host, port=port, protocol=protocol, ca_cert=ca_cert, cert_key=key, cert_cert=cert,
            timeout=timeout, api_path=API_PATH,
        )
        # With trust_env, requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override session.verify
        # (so etcd_ca_cert would be ignored) and sends etcd traffic through *_PROXY: only the
        # settings count here. Without etcd_ca_cert, https uses requests' default CA bundle.
        self.session.trust_env = False
        self.endpoint = endpoint
        self.endpoints = list(endpoints or [endpoint])
        if endpoint not in self.endpoints:
            self.endpoints.insert(0, endpoint)
        self.failovers = 0
        self.pool_key = None  # set by pooled_client: where give_back() returns it
        self.reused = False  # set by pooled_client: an idle client, not checked when it was taken
        self.ca_cert = ca_cert
        self.cert = cert
        self.key = key
        self.user = user
        self._password = password
        # etcd3gw posts with timeout=self.timeout; None would mean 'wait forever'.
        self.timeout = float(timeout)
        self._conn = None  # the kept-alive connection of request(), to self._conn_to
        self._conn_to = None

    def clone(self, timeout=None):
        """A client for the same endpoint with its own HTTP session (one per thread), same token."""
        other = EtcdClient(self.endpoint, self.ca_cert, self.cert, self.key, self.user, self._password,
                           self.timeout if timeout is None else timeout, self.endpoints)
        other.pool_key = getattr(self, "pool_key", None)
        token = self.session.headers.get("Authorization")
        if token:
            other.session.headers["Authorization"] = token
        return other

    def close(self):
        self._drop_connection()
        try:
            self.session.close()
        except Exception:
            pass

    def scrub(self, text):
        """Never let the password reach a message (defence in depth: no code path puts it there)."""
        if self._password and len(self._password) >= 3:
            text = text.replace(self._password, "***")
        return text

    def describe(self, exc):
        return self.scrub(describe_error(exc))

    def check_health(self):
        """Raise EndpointError unless the endpoint answers and its cluster has a leader.

        Uses /v3/maintenance/status, which answers without authentication (etcd 3.4), through
        the raw session so that TLS errors keep their type.
        """
        try:
            resp = self.session.post(self.get_url("/maintenance/status"), json={}, timeout=self.timeout)
        except requests.exceptions.SSLError as exc:
            raise EndpointError(
                "%s: %s; check that etcd_ca_cert (%s) is the CA that signed the server "
                "certificate, and etcd_cert/etcd_key (%s, %s) if the server wants a client certificate"
                % (self.endpoint, self.scrub(describe_error(exc)), self.ca_cert or "system CAs",
                   self.cert or "not set", self.key or "not set"),
                permanent=True,
            )
        except (requests.exceptions.RequestException, OSError) as exc:
            raise EndpointError("%s: %s" % (self.endpoint, self.describe(exc)))
        if resp.status_code != 200:
            raise EndpointError("%s: HTTP %s %s" % (self.endpoint, resp.status_code, resp.text.strip()[:200]))
        try:
            status = resp.json()
        except ValueError:
            raise EndpointError("%s: not an etcd endpoint (answer is not JSON)" % self.endpoint, permanent=True)
        if "version" not in status:
            raise EndpointError("%s: not an etcd v3 endpoint" % self.endpoint, permanent=True)
        if not int(status.get("leader", 0) or 0):
            raise EndpointError("%s: etcd member has no leader (cluster lost quorum?)" % self.endpoint)
        if status.get("errors"):
            raise EndpointError("%s: etcd reports errors: %s" % (self.endpoint, "; ".join(status["errors"])))
        return status

    def authenticate(self):
        """Get a token for user/password and send it with every request. No-op without a user."""
        if not self.user:
            return
        try:
            # Authorization: None drops a stale token from this one request.
            resp = self.session.post(
                self.get_url("/auth/authenticate"), json={"name": self.user, "password": self._password},
                timeout=self.timeout, headers={"Authorization": None},
            )
        except (requests.exceptions.RequestException, OSError) as exc:
            raise EndpointError("%s: authentication request failed: %s" % (self.endpoint, self.describe(exc)))
        try:
            body = resp.json()
        except ValueError:
            body = {}
        reason = body.get("message") or body.get("error") or ("HTTP %s" % resp.status_code)
        if "authentication is not enabled" in reason:
            return  # credentials set before auth is turned on: requests work without a token
        if resp.status_code != 200 or not body.get("token"):
            permanent = "authentication failed" in reason
            raise EndpointError(
                "%s: etcd refused user %s: %s; check etcd_user/etcd_password"
                % (self.endpoint, self.user, self.scrub(reason)),
                permanent=permanent,
            )
        self.session.headers["Authorization"] = body["token"]

    def get_url(self, path):
        """The URL of an API path on the member in use (whatever etcd3gw's version does)."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d%s%s" % (self.protocol, host, int(self.port), API_PATH, path.lstrip("/"))

    def use_endpoint(self, endpoint):
        """Send the next requests to ``endpoint`` (one of ``endpoints``)."""
        self.protocol, self.host, self.port = parse_endpoint(endpoint)
        self.endpoint = endpoint

    def post(self, url, *args, **kwargs):
        """All of etcd3gw's calls go through here: one request, on the next member when the one in
        use cannot be reached (each member tried once), re-authenticating once on a bad token."""
        base = self.get_url("")  # every request passes here: build the member's URL prefix once
        path = url[len(base):] if url.startswith(base) else None
        tried = 1
        while True:
            try:
                return self._post_authenticated(url, *args, **kwargs)
            except (etcd3gw_exceptions.ConnectionFailedError, etcd3gw_exceptions.ConnectionTimeoutError,
                    EndpointError):
                if path is None or tried >= len(self.endpoints):
                    raise
            tried += 1
            self.failover()
            url = self.get_url(path)

    def failover(self):
        """Move to the next member (a simple token is per member: authenticate there)."""
        at = self.endpoints.index(self.endpoint) if self.endpoint in self.endpoints else -1
        self.use_endpoint(self.endpoints[(at + 1) % len(self.endpoints)])
        self.failovers += 1
        if self.user:
            self.authenticate()

    def _post_authenticated(self, url, *args, **kwargs):
        try:
            return self.request(url, *args, **kwargs)
        except etcd3gw_exceptions.Etcd3Exception as exc:
            if not self.user or not is_invalid_token_error(exc):
                raise
        self.authenticate()
        return self.request(url, *args, **kwargs)

    def request(self, url, **kwargs):
        """One POST of etcd3gw's (``json=`` or ``data=``), bounded by this client's timeout, with the
        errors etcd3gw would raise. Over the client's kept-alive connection (see the module docstring);
        a connection that failed in any way is not used again."""
        body = kwargs["data"] if kwargs.get("data") is not None else json.dumps(kwargs.get("json") or {})
        timeout = kwargs.get("timeout")
        headers = {"Content-Type": "application/json"}
        token = self.session.headers.get("Authorization")
        if token:
            headers["Authorization"] = token
        try:
            conn = self._connection(self.timeout if timeout is None else timeout)
            conn.request("POST", urlsplit(url).path, body, headers)
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
        except socket.timeout as exc:
            self._drop_connection()
            raise etcd3gw_exceptions.ConnectionTimeoutError("%s: timed out (%s)" % (self.endpoint, exc))
        except (OSError, http.client.HTTPException) as exc:
            self._drop_connection()
            raise etcd3gw_exceptions.ConnectionFailedError("%s: %s" % (self.endpoint, exc or type(exc).__name__))
        error = http_error(resp.status)
        if error is not None:
            raise error(text, resp.reason)
        return json.loads(text)

    def _connection(self, timeout):
        """The kept-alive connection to the member in use; a new one when there is none, it is to
        another member, or the server closed it while idle (readable before we asked: EOF)."""
        target = (self.protocol, self.host, int(self.port))
        conn = self._conn
        if conn is not None and (self._conn_to != target or (conn.sock is not None and _readable(conn.sock))):
            self._drop_connection()
            conn = None
        if conn is None:
            if self.protocol == "https":
                conn = http.client.HTTPSConnection(self.host, int(self.port), timeout=timeout, context=self._tls_context())
            else:
                conn = http.client.HTTPConnection(self.host, int(self.port), timeout=timeout)
            self._conn, self._conn_to = conn, target
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _tls_context(self):
        """As requests verifies: etcd_ca_cert, else requests' CA bundle; the host name checked."""
        context = ssl.create_default_context(cafile=self.ca_cert or requests.certs.where())
        if self.cert:
            context.load_cert_chain(self.cert, self.key)
        return context

    def _drop_connection(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- small typed helpers -------------------------------------------------------------------

    def txn(self, body):
        return self.post(self.get_url("/kv/txn"), json=body)

    def get_kv(self, key):
        """The key's decoded KeyValue dict, or None (linearizable read)."""
        result = self.post(self.get_url("/kv/range"), json={"key": b64(key)})
        kvs = result.get("kvs", [])
        return decode_kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix):
        """Every key under ``prefix``, decoded, in key order (linearizable read)."""
        raw = prefix.encode("utf-8") if not isinstance(prefix, bytes) else prefix
        end = raw[:-1] + bytes([raw[-1] + 1])  # the first key after every key that starts with prefix
        result = self.post(self.get_url("/kv/range"), json={"key": b64(raw), "range_end": b64(end)})
        return [decode_kv(kv) for kv in result.get("kvs", [])]

    def grant_lease(self, ttl):
        """(lease id, granted TTL): etcd may raise a too small TTL to its minimum."""
        result = self.post(self.get_url("/lease/grant"), json={"TTL": int(ttl), "ID": 0})
        if result.get("error"):
            raise etcd3gw_exceptions.Etcd3Exception(str(result["error"]))
        return int(result["ID"]), int(result.get("TTL", ttl))

    def refresh_lease(self, lease_id):
        """New TTL of the lease, -1 when it is gone (expired or revoked)."""
        result = self.post(self.get_url("/lease/keepalive"), json={"ID": int(lease_id)})
        return int(result.get("result", {}).get("TTL", -1))

    def lease_ttl(self, lease_id):
        """Remaining seconds (rounded down by etcd), -1 when the lease is gone."""
        result = self.post(self.get_url("/kv/lease/timetolive"), json={"ID": int(lease_id)})
        return int(result.get("TTL", -1))

    def revoke_lease(self, lease_id):
        """Revoke; a lease that is already gone is fine."""
        try:
            self.post(self.get_url("/kv/lease/revoke"), json={"ID": int(lease_id)})
        except etcd3gw_exceptions.Etcd3Exception as exc:
            if "lease not found" not in (exc.detail_text or ""):
                raise

    def wait_for_delete(self, key, start_revision, timeout, settle=0.0):
        """Wait up to ``timeout`` s for a DELETE of ``key`` at revision >= start_revision.

        Returns True when one was seen, False on timeout or any stream problem (the caller
        retries its transaction: a False is never trusted to mean 'still locked'). Starting the
        watch at a known revision means a delete that happened before the watch was set up is
        still reported: no lost wakeups.

        ``settle`` (seconds): after a delete, wait that long for a PUT of the key (someone else
        took it: wait on for its delete) before returning True. Waiters given different settle
        times do not all send a transaction, most of them doomed, after each release.
        """
        deadline = time.monotonic() + timeout
        body = {"create_request": {"key": b64(key), "start_revision": int(start_revision)}}
        connect_timeout = max(0.05, min(self.timeout, timeout))
        # requests' read timeout bounds each socket read: it is the wait for the next message.
        read_timeout = max(0.05, timeout)
        try:
            resp = self.session.post(self.get_url("/watch"), json=body, stream=True,
                                     timeout=(connect_timeout, read_timeout))
        except (requests.exceptions.RequestException, OSError):
            return self._pause_until(deadline)
        deleted = False
        try:
            if resp.status_code != 200:
                return self._pause_until(deadline)
            sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
            # chunk_size=None: hand over each chunk of the (chunked) stream as soon as it arrives.
            for line in resp.iter_lines(chunk_size=None):
                if not line.strip():
                    continue
                result = json.loads(line.decode("utf-8")).get("result", {})
                if result.get("canceled"):
                    # compacted start revision, or a bad/expired token: let the caller retry.
                    if self.user and "auth token" in (result.get("cancel_reason") or ""):
                        self.authenticate()
                    return self._pause_until(deadline)
                for event in result.get("events", []):
                    deleted = event.get("type") == "DELETE"  # proto3 JSON leaves out PUT (0)
                if deleted and (settle <= 0 or sock is None):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return deleted
                if result.get("events"):
                    # deleted: give someone else 'settle' to take it; taken: wait for its delete
                    sock.settimeout(max(0.001, min(settle, left)) if deleted else left)
            return deleted or self._pause_until(deadline)  # the server ended the stream
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return deleted  # read timeout (the end of a slice or of 'settle') or stream cut: retry
        except (requests.exceptions.RequestException, OSError, ValueError):
            return deleted or self._pause_until(deadline)
        finally:
            resp.close()

    @staticmethod
    def _pause_until(deadline, pause=0.2):
        """After a watch problem: wait a little so that a persistent one is no busy loop."""
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        return False


def _readable(sock):
    """The idle socket has something to read: the server closed it (or broke the protocol)."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def connect(settings, timeout=REQUEST_TIMEOUT, deadline=None):
    """A connected, authenticated EtcdClient on the first healthy endpoint of the settings.

    ``timeout`` bounds each request, ``deadline`` (time.monotonic()) the whole attempt.
    Raises EndpointError listing every endpoint and why it was not used;
    its ``permanent`` is True when retrying cannot help (TLS or credential problems).
    """
    endpoints, ca_cert, cert, key, user, password = validate_connection_settings(settings)
    errors = []
    permanent = True
    for endpoint in endpoints:
        request_timeout = timeout
        if deadline is not None:
            request_timeout = min(timeout, deadline - time.monotonic())
            if request_timeout <= 0.01:
                errors.append("%s: not tried (out of time)" % endpoint)
                permanent = False
                continue
        client = EtcdClient(endpoint, ca_cert, cert, key, user, password, timeout=request_timeout,
                            endpoints=endpoints)
        try:
            client.check_health()
            client.authenticate()
            if not user:
                client.get_kv("/")  # fails early and clearly if the server wants a user
        except EndpointError as exc:
            client.close()
            if exc.permanent and user and "refused user" in str(exc):
                raise  # credentials are cluster-wide: other endpoints would refuse them too
            errors.append(str(exc))
            permanent = permanent and exc.permanent
            continue
        except etcd3gw_exceptions.Etcd3Exception as exc:
            client.close()
            message = client.describe(exc)
            if "user name is empty" in message:
                raise EndpointError(
                    "%s: etcd requires authentication; set etcd_user and etcd_password" % endpoint, permanent=True
                )
            errors.append("%s: %s" % (endpoint, message))
            permanent = False
            continue
        client.timeout = float(timeout)
        return client
    raise EndpointError("no usable etcd endpoint (%s)" % "; ".join(errors), permanent=permanent)


# ---------------------------------------------------------------------------------------------
# the pool of idle clients (one process, many locks)
# ---------------------------------------------------------------------------------------------

class ProcessLocal(dict):
    """A dict of this process, with ``guard`` to hold while using it: a forked child starts with an
    empty one and a new guard (what the parent kept, connections or leases, is not the child's)."""

    def __init__(self):
        super(ProcessLocal, self).__init__()
        self.guard = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self):
        self.clear()
        self.guard = threading.Lock()


_pool = ProcessLocal()  # pool key -> idle clients (their sockets must not be shared with a child)


def pool_key(settings):
    """What makes two clients interchangeable: this process, the endpoints, TLS files, credentials."""
    endpoints, ca_cert, cert, key, user, password = validate_connection_settings(settings)
    return (os.getpid(), tuple(endpoints), ca_cert, cert, key, user, password)


def idle_client(key, timeout=REQUEST_TIMEOUT):
    """An idle client of the pool for ``key``, or None."""
    if key[0] != os.getpid():
        return None
    with _pool.guard:
        idle = _pool.get(key)
        client = idle.pop() if idle else None
    if client is not None:
        client.timeout = float(timeout)
    return client


def pooled_client(settings, timeout=REQUEST_TIMEOUT, deadline=None):
    """A connected client: an idle one of this process for these settings, else ``connect()``.

    An idle client was connected and checked before; if its member has gone meanwhile, its next
    request fails over to the next member like any request (``EtcdClient.post``)."""
    key = pool_key(settings)
    client = idle_client(key, timeout)
    reused = client is not None
    if not reused:
        client = connect(settings, timeout, deadline)
    client.pool_key = key
    client.reused = reused  # True: not checked just now (its member may have gone since)
    return client


def give_back(client):
    """Return a client that works to the pool (closed when the pool is full or it is not ours)."""
    key = getattr(client, "pool_key", None)
    if key is None or key[0] != os.getpid():
        client.close()
        return
    client.timeout = REQUEST_TIMEOUT
    with _pool.guard:
        idle = _pool.setdefault(key, [])
        if len(idle) < POOL_SIZE and client not in idle:
            idle.append(client)
            return
    client.close()
