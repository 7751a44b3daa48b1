"""Feature tests for the private botocore/urllib3 internals bedrock-hooks relies on.

botocore's events carry most of the library, but a few features reach into private attributes
(botocore's retry slot, a client's ``URLLib3Session``, urllib3's pool hand-out, the SigV4 clock, the
event-stream reader...). Private names change without notice: botocore 1.34 signs with
``datetime.utcnow()`` where 1.40.2+ calls ``botocore.auth.get_current_datetime``. Instead of trusting
version numbers, every internal is listed once in :data:`CHECKS` with the feature that needs it and a
probe that tries it on a small specimen object.

The probes run once per process, lazily (the first time a feature asks, i.e. when the first Bedrock
client is attached, never at import), cheaply (no client, no socket, no I/O: about a millisecond in
all) and never raise. A missing internal turns off *only* the features that need it, with one warning
naming the internal and the feature; the client then behaves as plain botocore for that feature and
keeps every other one. ``bedrock-hooks doctor`` prints the table (:func:`report`).

How features consult it: a feature that acts on every client (retry slot, keep-alive and eviction,
streams, opt-in Region failover) is turned off when a client is attached: :func:`restrict` switches its
settings off (free when everything is available), or its factory asks :func:`available`. A remedy that
acts only on a rare error (clock-skew correction, credential refresh) asks :func:`available` at that
moment, so the warning comes when it matters -- a botocore older than 1.40.2 only warns when a clock
skew is actually measured.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("bedrock_hooks.compat")

# -- the features that rely on internals -----------------------------------------------------------

RETRY_SLOT = "retry-slot"
CONNECTIONS = "connections"
CLOCK_SKEW = "clock-skew"
REFRESH_CREDENTIALS = "refresh-credentials"
CREDENTIAL_SOURCE = "credential-source"
QUOTA_SCOPE = "quota-scope"
STREAMS = "streams"
REGION_FAILOVER = "region-failover"
RETRY_QUOTA = "retry-quota"
SESSIONS = "sessions"
AIO_CONNECTIONS = "aio-connections"
AIO_STREAMS = "aio-streams"
AIO_SESSIONS = "aio-sessions"
AIO_REFRESH_CREDENTIALS = "aio-refresh-credentials"
AIO_RETRY_QUOTA = "aio-retry-quota"
AIO_CUT_ANSWERS = "aio-cut-answers"


@dataclass(frozen=True)
class Feature:
    """What a feature does (for the warning) and the settings that turn it off (for :func:`restrict`)."""

    name: str
    does: str
    off: Mapping[str, Any] = field(default_factory=dict)


FEATURES: dict[str, Feature] = {f.name: f for f in (
    Feature(RETRY_SLOT, "error-specific retry decisions in botocore's retry slot (botocore's own retry "
                        "handler decides instead)", {"retry": False}),
    Feature(CONNECTIONS, "per-socket TCP keep-alive and idle-connection eviction (both go through the pool "
                         "hook)", {"keepalive": False, "pool_max_idle": 0.0}),
    Feature(CLOCK_SKEW, "clock-skew correction of the SigV4 signing time (the skew is still measured and "
                        "reported in the hint)"),
    Feature(REFRESH_CREDENTIALS, "forced refresh of expired refreshable credentials"),
    Feature(CREDENTIAL_SOURCE, "the credential source in hints"),
    Feature(QUOTA_SCOPE, "telling AWS accounts apart in state shared between clients (each client then keeps "
                         "its own rate-limiter bucket and circuits)"),
    Feature(STREAMS, "hints and transparent re-issue for event streams"),
    Feature(REGION_FAILOVER, "Region failover", {"fallback_regions": ()}),
    Feature(RETRY_QUOTA, "charging botocore's standard-mode retry quota for the library's retries"),
    Feature(SESSIONS, "install(boto3_session) scoped to that session (install() and install(client) "
                      "need no boto3 internal)"),
    # No settings to switch off: the sync clients' keep-alive does not depend on aiohttp (keepalive_aio asks).
    Feature(AIO_CONNECTIONS, "per-socket TCP keep-alive and idle-connection eviction on aiobotocore clients "
                             "(aiohttp's connector)"),
    Feature(AIO_STREAMS, "hints and transparent re-issue for event streams on aiobotocore clients"),
    Feature(AIO_SESSIONS, "install(aio_session) scoped to that session (install() and install(aio_client) need "
                          "no aiobotocore internal)"),
    Feature(AIO_REFRESH_CREDENTIALS, "forced refresh of expired aiobotocore refreshable credentials"),
    Feature(AIO_RETRY_QUOTA, "charging aiobotocore's retry quota for the library's retries on async clients"),
    Feature(AIO_CUT_ANSWERS, "noticing a 2xx cut short on async clients (aiohttp's own length check stays)"),
)}


# -- probes: each builds a small specimen and tries the internal on it --------------------------------

def _emitter_slot() -> bool:
    from botocore.hooks import HierarchicalEmitter

    emitter = HierarchicalEmitter()

    def handler(**kwargs: Any) -> None:
        return None

    emitter.register("needs-retry.probe", handler, unique_id="retry-config-probe")
    registered = list(emitter._handlers.prefix_search("needs-retry.probe"))  # how retry.py verifies the slot
    return emitter._unique_id_handlers["retry-config-probe"]["handler"] is handler and handler in registered


def _aliaser_emitter() -> bool:
    from botocore.hooks import EventAliaser, HierarchicalEmitter

    inner = HierarchicalEmitter()
    return EventAliaser(inner)._emitter is inner


def _assigned_in_init(cls: type, name: str) -> bool:
    """``self.<name> = ...`` in ``cls.__init__`` (a client attribute, checked without building a client)."""
    return name in cls.__init__.__code__.co_names


def _client_endpoint() -> bool:
    from botocore.client import BaseClient
    from botocore.endpoint import Endpoint

    return _assigned_in_init(BaseClient, "_endpoint") and _assigned_in_init(Endpoint, "http_session")


def _client_signer() -> bool:
    from botocore.client import BaseClient

    return _assigned_in_init(BaseClient, "_request_signer")


_specimens: dict[str, Any] = {}  # built once per report() run, dropped after it


def _specimen_session() -> Any:
    session = _specimens.get("session")
    if session is None:
        from botocore.httpsession import URLLib3Session

        session = _specimens["session"] = URLLib3Session()
    return session


def _session_managers() -> bool:
    session = _specimen_session()
    pools = session._manager.pools
    return (isinstance(session._proxy_managers, dict) and isinstance(pools._container, Mapping)
            and hasattr(pools.lock, "__enter__"))


def _session_socket_options() -> bool:
    return isinstance(_specimen_session()._socket_options, list)


def _session_pool_classes() -> bool:
    by_scheme = _specimen_session()._pool_classes_by_scheme
    return isinstance(by_scheme, dict) and {"http", "https"} <= set(by_scheme)


def _pool_classes() -> list[type]:
    from botocore.awsrequest import AWSHTTPConnectionPool, AWSHTTPSConnectionPool

    return [AWSHTTPConnectionPool, AWSHTTPSConnectionPool]


def _parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def _pool_get_conn() -> bool:  # the eviction hook overrides exactly this signature
    return all(_parameters(cls._get_conn) == ["self", "timeout"] for cls in _pool_classes())


def _pool_put_conn() -> bool:
    return all(_parameters(cls._put_conn) == ["self", "conn"] for cls in _pool_classes())


def _pool_connections() -> bool:
    pool = _pool_classes()[0]("127.0.0.1", 9, maxsize=1)  # no connection is opened before a request
    conn = pool._new_conn()  # an HTTPConnection object: it connects on first use, not here
    return hasattr(pool.pool, "queue") and hasattr(conn, "socket_options") and hasattr(conn, "sock")


def _signing_clock() -> bool:
    import botocore.auth

    function = botocore.auth.get_current_datetime
    return "remove_tzinfo" in _parameters(function) and \
        "get_current_datetime" in botocore.auth.SigV4Auth.add_auth.__code__.co_names


def _specimen_signer() -> tuple[Any, Any, Any]:
    from botocore.credentials import Credentials
    from botocore.hooks import HierarchicalEmitter
    from botocore.model import ServiceId
    from botocore.signers import RequestSigner

    credentials = Credentials("AKIDCOMPATPROBE", "compat-probe-secret")
    events = HierarchicalEmitter()  # the signer holds it weakly: returned to keep it alive
    signer = RequestSigner(ServiceId("Bedrock Runtime"), "us-east-1", "bedrock", "v4", credentials, events)
    return signer, credentials, events


def _signer_credentials() -> bool:
    signer, credentials, _ = _specimen_signer()
    return signer._credentials is credentials


def _signing_context_region() -> bool:
    from botocore.awsrequest import AWSRequest

    signer, _, events = _specimen_signer()
    request = AWSRequest(method="POST", url="https://bedrock-runtime.us-west-2.amazonaws.com/model/x/converse",
                         data=b"{}")
    request.context["signing"] = {"region": "us-west-2", "signing_name": "bedrock"}
    signer.sign("Converse", request)
    del events
    return "/us-west-2/bedrock/aws4_request" in str(request.headers.get("Authorization", ""))


def _credential_fields() -> bool:
    """The fields quota_scope reads without triggering a refresh: ``access_key`` or ``_access_key``."""
    import datetime

    from botocore.credentials import Credentials, RefreshableCredentials

    expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    refreshable = RefreshableCredentials("AKIDCOMPATPROBE", "s", None, expiry, dict, "probe")
    return all("AKIDCOMPATPROBE" in (vars(c).get("_access_key"), vars(c).get("access_key"))
               for c in (Credentials("AKIDCOMPATPROBE", "s"), refreshable))


def _refreshable_credentials() -> bool:
    import datetime

    from botocore.credentials import RefreshableCredentials

    def refresh() -> dict[str, str]:
        return {}

    expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    credentials = RefreshableCredentials("AKIDCOMPATPROBE", "compat-probe-secret", None, expiry, refresh, "probe")
    return (credentials._refresh_using is refresh and "is_mandatory" in _parameters(credentials._protected_refresh)
            and callable(credentials._refresh_lock.acquire) and callable(credentials._refresh_lock.release))


def _event_stream() -> bool:
    from botocore.eventstream import EventStream

    raw = object()
    stream = EventStream(raw, None, None, "ConverseStream")  # the reader is a generator: nothing is read
    return (stream._raw_stream is raw and stream._operation_name == "ConverseStream"
            and hasattr(stream, "_output_shape") and hasattr(stream, "_parser")
            and inspect.isgenerator(stream._event_generator) and callable(stream._parse_event))


def new_retry_quota_checker() -> Any:
    """A fresh standard-mode retry quota checker, built as this botocore builds one: newer releases also
    pass a throttling detector, 1.40.61 and older take the quota alone (budget.py, legacy mode)."""
    from botocore.retries import quota, standard

    if "throttling_detector" in _parameters(standard.RetryQuotaChecker.__init__):
        return standard.RetryQuotaChecker(quota.RetryQuota(),
                                          standard.ThrottlingErrorDetector(standard.RetryEventAdapter()))
    return standard.RetryQuotaChecker(quota.RetryQuota())


def _retry_quota() -> bool:
    from botocore.retries import standard

    checker = new_retry_quota_checker()
    handler = standard.RetryHandler(None, None, checker)
    inner = checker._quota
    context = standard.RetryContext(attempt_number=1, operation_model=None, parsed_response=None,
                                    http_response=None, caught_exception=None, request_context={})
    return (handler._retry_quota is checker and callable(inner.acquire) and callable(inner.release)
            and isinstance(inner.available_capacity, int) and callable(checker.release_retry_quota)
            and checker.acquire_retry_quota(context) and "retry_quota_capacity" in context.request_context)


def _boto3_sessions() -> bool:
    import boto3.session

    return _assigned_in_init(boto3.session.Session, "_session")


def _aio_session_connector_args() -> bool:
    """aiobotocore builds each aiohttp connector from ``AIOHTTPSession._connector_args`` (2.x and 3.x) and keeps
    its ``aiohttp.ClientSession`` objects in ``_sessions``."""
    from aiobotocore.httpsession import AIOHTTPSession

    return (_assigned_in_init(AIOHTTPSession, "_connector_args") and _assigned_in_init(AIOHTTPSession, "_sessions")
            and "_connector_args" in AIOHTTPSession._create_connector.__code__.co_names)


def _aio_event_stream() -> bool:
    """aiobotocore's ``AioEventStream`` keeps botocore's fields, with an async generator of raw frames and a
    coroutine frame parser (an unstarted async generator: nothing is read, nothing is left to await)."""
    from aiobotocore.eventstream import AioEventStream

    raw = object()
    stream = AioEventStream(raw, None, None, "ConverseStream")
    return (stream._raw_stream is raw and stream._operation_name == "ConverseStream"
            and hasattr(stream, "_output_shape") and hasattr(stream, "_parser")
            and inspect.isasyncgen(stream._event_generator) and inspect.iscoroutinefunction(stream._parse_event))


def _aio_client_creator() -> bool:
    """The coroutine every aiobotocore session builds its clients with (patches.AIO_CREATE_CLIENT), and the
    session's event emitter it keeps (how installation tells which session made a client)."""
    from aiobotocore.client import AioClientCreator
    from botocore.client import ClientCreator

    return (inspect.iscoroutinefunction(vars(AioClientCreator)["create_client"])
            and _assigned_in_init(ClientCreator, "_event_emitter"))


def _aio_refreshable_credentials() -> bool:
    import datetime

    from aiobotocore.credentials import AioRefreshableCredentials

    async def refresh() -> dict[str, str]:
        return {}

    expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    credentials = AioRefreshableCredentials("AKIDCOMPATPROBE", "compat-probe-secret", None, expiry, refresh, "probe")
    return (credentials._refresh_using is refresh and inspect.iscoroutinefunction(credentials._protected_refresh)
            and "is_mandatory" in _parameters(credentials._protected_refresh)
            and hasattr(credentials._refresh_lock, "__aenter__"))


def _aio_retry_quota() -> bool:
    from aiobotocore.retries.standard import AioRetryHandler
    from botocore.retries.standard import RetryHandler

    return (issubclass(AioRetryHandler, RetryHandler) and _assigned_in_init(RetryHandler, "_retry_quota")
            and inspect.iscoroutinefunction(AioRetryHandler.needs_retry))


def _aio_read_body() -> bool:
    """aiobotocore reads a non-streaming body before needs-retry and keeps it in ``_content``, which a sync
    handler reads (its ``content`` is a coroutine: never created there)."""
    from aiobotocore import endpoint
    from aiobotocore.awsrequest import AioAWSResponse

    return ("_content" in AioAWSResponse._content_prop.__code__.co_names
            and "content" in endpoint.convert_to_response_dict.__code__.co_names)


def _aiohttp_connector() -> bool:
    """``TCPConnector(socket_factory=...)`` (aiohttp 3.12+) used for every new socket, the idle limit ``_get``
    reads at hand-out, and the pooled/acquired connections (a connector needs a running loop: read, not built)."""
    import aiohttp
    from aiohttp.connector import BaseConnector, TCPConnector

    base = BaseConnector.__init__.__code__.co_names
    return ("socket_factory" in _parameters(TCPConnector.__init__)
            and "_socket_factory" in TCPConnector._wrap_create_connection.__code__.co_names
            and all(name in base for name in ("_keepalive_timeout", "_conns", "_acquired"))
            and "_keepalive_timeout" in BaseConnector._get.__code__.co_names
            and isinstance(inspect.getattr_static(aiohttp.ClientSession, "connector"), property))


@dataclass(frozen=True)
class Check:
    """One private internal, the features that need it, and the probe that tries it."""

    internal: str
    features: tuple[str, ...]
    probe: Callable[[], bool]
    #: Probe only once this module is imported (async internals: a sync process never imports aiobotocore).
    loaded: str | None = None


#: Every private botocore/boto3/urllib3 internal the library relies on. A new use of one adds a line.
CHECKS: tuple[Check, ...] = (
    Check("botocore.hooks.EventAliaser._emitter", (RETRY_SLOT,), _aliaser_emitter),
    Check("botocore.hooks.HierarchicalEmitter._unique_id_handlers / _handlers.prefix_search", (RETRY_SLOT,),
          _emitter_slot),
    Check("botocore.client.BaseClient._endpoint.http_session", (CONNECTIONS,), _client_endpoint),
    Check("URLLib3Session._manager / _proxy_managers / PoolManager.pools._container, .lock", (CONNECTIONS,),
          _session_managers),
    Check("URLLib3Session._socket_options", (CONNECTIONS,), _session_socket_options),
    Check("URLLib3Session._pool_classes_by_scheme", (CONNECTIONS,), _session_pool_classes),
    Check("AWSHTTP(S)ConnectionPool._get_conn(self, timeout)", (CONNECTIONS,), _pool_get_conn),
    Check("AWSHTTP(S)ConnectionPool._put_conn(self, conn)", (CONNECTIONS,), _pool_put_conn),
    Check("HTTPConnectionPool.pool.queue / HTTPConnection.socket_options, .sock", (CONNECTIONS,), _pool_connections),
    Check("botocore.auth.get_current_datetime (read by SigV4Auth.add_auth)", (CLOCK_SKEW,), _signing_clock),
    Check("botocore.client.BaseClient._request_signer", (REFRESH_CREDENTIALS, CREDENTIAL_SOURCE, QUOTA_SCOPE),
          _client_signer),
    Check("botocore.signers.RequestSigner._credentials", (REFRESH_CREDENTIALS, CREDENTIAL_SOURCE, QUOTA_SCOPE),
          _signer_credentials),
    Check("Credentials.access_key / RefreshableCredentials._access_key (read without a refresh)", (QUOTA_SCOPE,),
          _credential_fields),
    Check("RefreshableCredentials._protected_refresh(is_mandatory) / _refresh_using / _refresh_lock",
          (REFRESH_CREDENTIALS,), _refreshable_credentials),
    Check("botocore.eventstream.EventStream._raw_stream / _event_generator / _parse_event / _parser / "
          "_output_shape / _operation_name", (STREAMS,), _event_stream),
    Check("RequestSigner.sign honours request.context['signing']['region']", (REGION_FAILOVER,),
          _signing_context_region),
    Check("botocore.retries.standard.RetryHandler._retry_quota / RetryQuotaChecker._quota, "
          "acquire_retry_quota(RetryContext), release_retry_quota", (RETRY_QUOTA,), _retry_quota),
    Check("boto3.Session._session (the botocore session install(boto3_session) covers)", (SESSIONS,),
          _boto3_sessions),
    Check("aiobotocore AIOHTTPSession._connector_args / _sessions", (AIO_CONNECTIONS,), _aio_session_connector_args,
          loaded="aiobotocore"),
    Check("aiohttp TCPConnector(socket_factory=) / _socket_factory, _keepalive_timeout, _conns, _acquired",
          (AIO_CONNECTIONS,), _aiohttp_connector, loaded="aiobotocore"),
    Check("aiobotocore AioEventStream._event_generator (async generator) / _parse_event (coroutine)",
          (AIO_STREAMS,), _aio_event_stream, loaded="aiobotocore"),
    Check("aiobotocore AioClientCreator.create_client (a coroutine) / ClientCreator._event_emitter",
          (AIO_SESSIONS,), _aio_client_creator, loaded="aiobotocore"),
    Check("aiobotocore AioRefreshableCredentials._protected_refresh (a coroutine) / _refresh_lock (async)",
          (AIO_REFRESH_CREDENTIALS,), _aio_refreshable_credentials, loaded="aiobotocore"),
    Check("aiobotocore AioRetryHandler (a RetryHandler: ._retry_quota, async needs_retry)", (AIO_RETRY_QUOTA,),
          _aio_retry_quota, loaded="aiobotocore"),
    Check("aiobotocore AioAWSResponse._content (the body read before needs-retry)", (AIO_CUT_ANSWERS,),
          _aio_read_body, loaded="aiobotocore"),
)


# -- the once-per-process status ------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One line of the doctor table."""

    internal: str
    features: tuple[str, ...]
    ok: bool
    problem: str  #: why the probe failed ("" when ok): the exception type and message, never a value
    pending: str | None = None  #: not probed yet: this module (:attr:`Check.loaded`) is not imported


_rows: tuple[Row, ...] | None = None
_missing: dict[str, str] = {}  # feature -> the first internal it lacks (filled with _rows)
_warned: dict[str, object] = {}


def _run(check: Check) -> Row:
    if check.loaded is not None and check.loaded not in sys.modules:
        return Row(check.internal, check.features, True, "", pending=check.loaded)
    try:
        ok = bool(check.probe())
        problem = "" if ok else "present but not shaped as expected"
    except Exception as exc:  # a probe failure means "missing", never an error of the host
        ok, problem = False, f"{type(exc).__name__}: {exc}"[:200]
    return Row(check.internal, check.features, ok, problem)


def report() -> tuple[Row, ...]:
    """The table: every internal, the features that need it, and whether this process has it (cached).

    No lock: the probes are idempotent and a race only computes the same table twice (fork-safe too)."""
    global _rows
    rows = _rows
    if rows is not None and any(row.pending in sys.modules for row in rows if row.pending):
        rows = None  # an async library was imported since: probe its internals now
    if rows is None:
        try:
            rows = tuple(_run(check) for check in CHECKS)
        finally:
            _specimens.clear()
        missing: dict[str, str] = {}
        for row in rows:
            for name in row.features:
                if not row.ok:
                    missing.setdefault(name, row.internal)
        _missing.clear()
        _missing.update(missing)
        _rows = rows
    return rows


def missing(feature: str) -> str | None:
    """The first internal ``feature`` needs that this process lacks, or None."""
    report()
    return _missing.get(feature)


def _warn_once(feature: str, internal: str) -> None:
    token = object()
    if _warned.setdefault(feature, token) is not token:  # atomic: exactly one caller wins, no lock to fork
        return
    logger.warning("bedrock-hooks: %s is off: this botocore/urllib3 has no usable %s (%s); the rest of "
                   "bedrock-hooks stays on. `bedrock-hooks doctor` shows the compatibility table.",
                   FEATURES[feature].does, internal, _versions())


def available(feature: str) -> bool:
    """Whether ``feature`` can run here; the first False per feature logs one warning."""
    internal = missing(feature)
    if internal is None:
        return True
    _warn_once(feature, internal)
    return False


def restrict(settings: Any) -> Any:
    """``settings`` with every unavailable feature's settings turned off (the same object when none is).

    Warns once per feature, and only for a feature the settings had on: a feature the user switched
    off needs no warning that it cannot run."""
    report()
    if not _missing:
        return settings
    changes: dict[str, Any] = {}
    for name in _missing:
        off = FEATURES[name].off
        if off and any(getattr(settings, key, value) != value for key, value in off.items()):
            _warn_once(name, _missing[name])
            changes.update(off)
    if not changes:
        return settings
    sources = {**getattr(settings, "sources", {}), **{key: "compat" for key in changes}}
    return settings.replace(**changes, sources=sources)


def _versions() -> str:
    found = []
    for module in ("botocore", "urllib3"):
        try:
            found.append(f"{module} {__import__(module).__version__}")
        except Exception:
            found.append(f"{module} ?")
    return ", ".join(found)


def reset() -> None:
    """Forget the table and the warnings (tests that remove an internal, then probe again)."""
    global _rows
    _rows = None
    _missing.clear()
    _warned.clear()
