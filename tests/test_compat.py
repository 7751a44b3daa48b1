"""bedrock_hooks.compat: every private internal is feature-tested once, and a missing one turns off only
the feature that needs it (one warning naming both), while the call goes on as plain botocore makes it.

A "botocore without the internal" is made the way a botocore release would make it: the class is
recompiled from its own source with the private name spelled differently (:func:`renamed`), so botocore
keeps working exactly as before and only bedrock-hooks' assumption breaks. Outcomes are compared with a
plain client of an un-hooked session, call for call.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import socket
import subprocess
import sys
import textwrap
import types
from typing import Any

import botocore
import botocore.auth
import pytest
from botocore.exceptions import ClientError, EventStreamError

import bedrock_hooks
from bedrock_hooks import compat, keepalive, quota_scope, retry
from bedrock_hooks.testing import BedrockServer, EventFrame, Reply, sigv4_scope
from conftest import CREDS, converse, make_client, new_session

installation = importlib.import_module("bedrock_hooks.installation")  # the package imports it lazily

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
DAILY_QUOTA = Reply.throttling("Too many tokens per day, please wait before trying again.")  # library: fail at once


@pytest.fixture(autouse=True)
def fresh_compat(monkeypatch):
    """Probe again in each test (the table is once per process otherwise), and forget it afterwards: the
    teardown runs before monkeypatch restores botocore, so the next probe sees the real botocore."""
    compat.reset()
    yield
    compat.reset()


def renamed(monkeypatch, module: types.ModuleType, name: str, attribute: str, *, also: tuple = ()) -> type:
    """``module.name`` recompiled from its source with ``attribute`` spelled differently, installed in
    ``module`` and in every module of ``also`` that imported it by name."""
    original = getattr(module, name)
    source = textwrap.dedent(inspect.getsource(original))
    assert attribute in source, f"{name} does not use {attribute}: this botocore changed; update the test"
    namespace = dict(vars(module))
    source = re.sub(rf"\b{attribute}\b", f"{attribute}_renamed", source)
    exec(compile(source, inspect.getsourcefile(original), "exec"), namespace)
    replacement = namespace[name]
    for target in (module, *also):
        monkeypatch.setattr(target, name, replacement)
    return replacement


def compat_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bedrock_hooks.compat" and r.levelno == logging.WARNING]


def assert_one_warning(caplog, *words: str) -> None:
    """One warning, naming ``words`` (besides those for what this botocore lacks anyway: INTRODUCED)."""
    lacking = tuple(f"bedrock-hooks: {compat.FEATURES[f].does} is off" for f in _lacking_here())
    warnings = [w for w in compat_warnings(caplog) if not w.startswith(lacking)]
    assert len(warnings) == 1, warnings
    for word in words:
        assert word in warnings[0], warnings[0]


def features_of(client) -> dict[str, Any]:
    return {type(f).__name__: f for f in installation.attached_features(client)}


def outcome(server: BedrockServer, client, script: list[Reply], call) -> tuple:
    server.reset()
    server.script(*script)
    try:
        result: Any = ("ok", call(client)["ResponseMetadata"]["RetryAttempts"])
    except (ClientError, EventStreamError) as exc:
        result = (type(exc).__name__, exc.response["Error"]["Code"])
    return result, len(server.requests)


def hooked_and_plain(server, fake_time, **install_kwargs):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), **install_kwargs)
    return make_client(session, server), make_client(new_session(), server)


# -- the table ------------------------------------------------------------------------------------------

#: (first botocore version that has it, feature): pinned, so that a feature this botocore should support
#: can never be turned off (or a test of it xfailed by conftest's needs_internals) without failing here.
INTRODUCED = {compat.CLOCK_SKEW: (1, 40, 2)}  # before: SigV4Auth.add_auth calls datetime.utcnow() itself


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


def test_every_feature_is_available_unless_this_botocore_predates_its_internal():
    expected = {feature for feature, since in INTRODUCED.items() if _version(botocore.__version__) < since}
    lacking = {feature: compat.missing(feature) for feature in compat.FEATURES if compat.missing(feature)}
    assert set(lacking) == expected, [row for row in compat.report() if not row.ok]


def test_every_check_names_known_features_and_every_feature_has_a_check():
    named = {feature for check in compat.CHECKS for feature in check.features}
    assert named == set(compat.FEATURES)
    assert len({check.internal for check in compat.CHECKS}) == len(compat.CHECKS)


def test_probes_run_once_per_process_and_open_no_socket(monkeypatch):
    runs = []
    original_run = compat._run
    monkeypatch.setattr(compat, "_run", lambda check: runs.append(check) or original_run(check))

    def no_socket(*args, **kwargs):
        raise AssertionError("a compat probe opened a socket")

    monkeypatch.setattr(socket, "socket", no_socket)
    monkeypatch.setattr(socket, "create_connection", no_socket)
    first = compat.report()
    assert compat.report() is first and compat.available(compat.CONNECTIONS) in (True, False)
    assert len(runs) == len(compat.CHECKS)
    assert all(row.problem == "" for row in first if row.ok)


def test_importing_the_package_runs_no_probe():
    code = "import bedrock_hooks, bedrock_hooks.compat as c; print(c._rows is None)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr


def test_a_probe_that_raises_means_missing_and_never_reaches_the_host(monkeypatch, caplog):
    def broken() -> bool:
        raise RuntimeError("renamed upstream")

    check = compat.Check("botocore.Example._gone", (compat.RETRY_QUOTA,), broken)
    monkeypatch.setattr(compat, "CHECKS", (*compat.CHECKS, check))
    row = compat.report()[-1]
    assert not row.ok and row.problem == "RuntimeError: renamed upstream"
    assert compat.available(compat.RETRY_QUOTA) is False
    assert compat.available(compat.RETRY_QUOTA) is False
    assert_one_warning(caplog, "botocore.Example._gone", "retry quota")


def test_restrict_is_free_when_every_feature_it_restricts_is_available():
    settings = bedrock_hooks.load_settings()
    assert compat.restrict(settings) is settings  # also on botocore < 1.40.2: clock skew is asked at need


def test_restrict_warns_only_for_features_that_were_on(monkeypatch, caplog):
    check = compat.Check("URLLib3Session._socket_options", (compat.CONNECTIONS,), lambda: False)
    monkeypatch.setattr(compat, "CHECKS", (check,))
    assert compat.restrict(bedrock_hooks.load_settings(keepalive=False, pool_max_idle=0)).keepalive is False
    assert compat_warnings(caplog) == []
    restricted = compat.restrict(bedrock_hooks.load_settings())
    assert (restricted.keepalive, restricted.pool_max_idle) == (False, 0.0)
    assert restricted.sources["keepalive"] == "compat"
    assert_one_warning(caplog, "URLLib3Session._socket_options", "keep-alive")


# -- each fallback path ------------------------------------------------------------------------------------

def test_without_the_emitter_slot_botocore_keeps_its_own_retries(server, fake_time, caplog, monkeypatch):
    import botocore.hooks
    import botocore.session

    renamed(monkeypatch, botocore.hooks, "HierarchicalEmitter", "_unique_id_handlers", also=(botocore.session,))
    hooked, plain = hooked_and_plain(server, fake_time)
    # A daily token quota: the library fails at once, botocore standard mode retries it (3 requests).
    assert outcome(server, hooked, [DAILY_QUOTA] * 3, converse) == outcome(server, plain, [DAILY_QUOTA] * 3, converse)
    assert len(server.requests) == 3
    assert_one_warning(caplog, "HierarchicalEmitter._unique_id_handlers", "retry decisions")
    on = features_of(hooked)
    assert on["ClientHooks"]._botocore_retry is None and not on["ClientHooks"].settings.retry
    assert {"ConnectionHygiene", "StreamHooks"} <= set(on)  # the other features stay on
    server.reset()
    server.script(DAILY_QUOTA, DAILY_QUOTA, DAILY_QUOTA)
    with pytest.raises(ClientError) as raised:
        converse(hooked)
    assert raised.value.response["BedrockHooks"]["entry"] == "DailyTokenQuotaExceeded"  # hints stay on


def _http_session_without(monkeypatch, attribute: str) -> type:
    import botocore.endpoint
    import botocore.httpsession

    original = botocore.httpsession.URLLib3Session
    replacement = renamed(monkeypatch, botocore.httpsession, "URLLib3Session", attribute, also=(botocore.endpoint,))
    create = botocore.endpoint.EndpointCreator.create_endpoint  # http_session_cls=URLLib3Session, bound at def
    monkeypatch.setattr(create, "__defaults__", tuple(replacement if d is original else d for d in create.__defaults__))
    return replacement


def _keepalive_idle(client) -> list[int]:
    return [sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) for sock in keepalive.iter_pooled_sockets(client)]


def _pool_hand_out_with_a_new_parameter(monkeypatch) -> None:
    from botocore.awsrequest import AWSHTTPConnectionPool, AWSHTTPSConnectionPool
    from urllib3.connectionpool import HTTPConnectionPool

    def _get_conn(self, timeout=None, *, blocking=True):  # a urllib3 whose hand-out takes more than we pass on
        return HTTPConnectionPool._get_conn(self, timeout)

    for cls in (AWSHTTPConnectionPool, AWSHTTPSConnectionPool):
        monkeypatch.setattr(cls, "_get_conn", _get_conn, raising=False)


@pytest.mark.parametrize("break_it,internal", [
    (lambda m: _http_session_without(m, "_pool_classes_by_scheme"), "_pool_classes_by_scheme"),
    (lambda m: _http_session_without(m, "_socket_options"), "_socket_options"),
    (_pool_hand_out_with_a_new_parameter, "_get_conn"),
], ids=["pool-classes", "socket-options", "hand-out-signature"])
def test_without_the_pool_hook_internals_connections_are_botocore_s(break_it, internal, server, fake_time, caplog,
                                                                    monkeypatch):
    break_it(monkeypatch)
    hooked, plain = hooked_and_plain(server, fake_time, pool_max_idle=1)
    script = [Reply.service_unavailable()]
    assert outcome(server, hooked, script, converse) == outcome(server, plain, script, converse)
    assert outcome(server, hooked, script, converse)[0] == ("ok", 1)  # the library's retry decisions stay on
    assert "ConnectionHygiene" not in features_of(hooked) and "StreamHooks" in features_of(hooked)
    pools = [pool for manager in keepalive._managers(hooked._endpoint.http_session) for pool in keepalive._pools(manager)]
    assert pools and not any(isinstance(pool, keepalive._HygienicPool) for pool in pools)
    if hasattr(socket, "TCP_KEEPIDLE"):
        assert _keepalive_idle(hooked) == _keepalive_idle(plain) != [45]  # botocore's own socket options
    server.reset()
    converse(hooked)
    fake_time.now += 10  # idle past pool_max_idle: no eviction, the connection is reused as botocore does
    converse(hooked)
    assert len({r.connection_id for r in server.requests}) == 1
    assert_one_warning(caplog, internal, "keep-alive and idle-connection eviction")


def _skewed() -> Reply:
    import datetime

    ahead = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=10)
    return Reply.with_date(Reply.error(403, "InvalidSignatureException", "Signature expired: x"), ahead)


def test_without_the_signing_clock_skew_is_measured_not_corrected(server, fake_time, caplog, monkeypatch):
    import datetime

    if hasattr(botocore.auth, "get_current_datetime"):  # else this is botocore < 1.40.2 itself
        source = textwrap.dedent(inspect.getsource(botocore.auth.SigV4Auth.add_auth))
        utcnow = lambda: datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)  # noqa: E731
        namespace = {**vars(botocore.auth), "utcnow": utcnow}
        exec(source.replace("get_current_datetime()", "utcnow()"), namespace)  # how botocore < 1.40.2 signs
        monkeypatch.setattr(botocore.auth.SigV4Auth, "add_auth", namespace["add_auth"])
        monkeypatch.delattr(botocore.auth, "get_current_datetime")
    hooked, plain = hooked_and_plain(server, fake_time)
    assert outcome(server, hooked, [_skewed()], converse) == outcome(server, plain, [_skewed()], converse)
    assert outcome(server, hooked, [_skewed()], converse)[1] == 1  # not retried: nothing could correct it
    server.script(_skewed())
    with pytest.raises(ClientError) as raised:
        converse(hooked)
    info = raised.value.response["BedrockHooks"]
    assert info["entry"] == "RequestExpired" and info["details"]["clock_skew_seconds"] > 500  # measured, reported
    assert not hasattr(botocore.auth, "get_current_datetime")  # nothing patched in
    warnings = compat_warnings(caplog)
    assert len(warnings) == 1 and "get_current_datetime" in warnings[0] and "clock-skew correction" in warnings[0]


def test_without_refresh_internals_expired_credentials_fail_as_with_botocore(server, fake_time, caplog, monkeypatch):
    import datetime

    import boto3
    import botocore.credentials

    replacement = renamed(monkeypatch, botocore.credentials, "RefreshableCredentials", "_protected_refresh")
    refreshes = []

    def refresh():
        refreshes.append(1)
        expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        return {"access_key": "ASIACOMPATTEST", "secret_key": "compat-secret", "token": "t", "expiry_time": expiry.isoformat()}

    def session() -> boto3.Session:
        s = boto3.Session(region_name="us-east-1")
        s._session._credentials = replacement.create_from_metadata(refresh(), refresh, "assume-role")
        return s

    hooked_session, plain_session = session(), session()
    bedrock_hooks.install(hooked_session, runtime=fake_time.runtime())
    expired = [Reply.error(403, "ExpiredTokenException", "The security token included in the request is expired")]
    hooked, plain = make_client(hooked_session, server), make_client(plain_session, server)
    assert outcome(server, hooked, expired, converse) == outcome(server, plain, expired, converse)
    assert len(refreshes) == 2  # one per session at creation; no forced refresh
    assert_one_warning(caplog, "_protected_refresh", "refresh of expired")
    assert outcome(server, hooked, [Reply.service_unavailable()], converse)[0] == ("ok", 1)  # retries stay on


def test_without_signer_credentials_refresh_credential_source_and_account_scopes_are_off(server, fake_time, caplog,
                                                                                        monkeypatch):
    import botocore.args
    import botocore.signers

    renamed(monkeypatch, botocore.signers, "RequestSigner", "_credentials", also=(botocore.args,))
    hooked, plain = hooked_and_plain(server, fake_time)
    expired = [Reply.error(403, "ExpiredTokenException", "The security token included in the request is expired")]
    assert outcome(server, hooked, expired, converse) == outcome(server, plain, expired, converse)
    server.script(*expired)
    with pytest.raises(ClientError) as raised:
        converse(hooked)
    info = raised.value.response["BedrockHooks"]
    assert info["entry"] == "ExpiredToken" and "credential_source" not in info.get("details", {})
    # Accounts cannot be told apart: two clients of the same keys share no rate-limiter bucket or circuit.
    other = make_client(new_session(), server)
    assert quota_scope.account_of(hooked._request_signer) != quota_scope.account_of(other._request_signer)
    warnings = [w for w in compat_warnings(caplog) if "RequestSigner._credentials" in w]
    assert len(warnings) == 2 == len(compat_warnings(caplog)), compat_warnings(caplog)
    assert any("refresh of expired" in w for w in warnings) and any("telling AWS accounts apart" in w for w in warnings)


def test_without_event_stream_internals_streams_are_plain_botocore(server, fake_time, caplog, monkeypatch):
    import botocore.eventstream
    import botocore.parsers

    renamed(monkeypatch, botocore.eventstream, "EventStream", "_event_generator", also=(botocore.parsers,))
    hooked, plain = hooked_and_plain(server, fake_time)
    throttled = [Reply.stream([EventFrame.exception("throttlingException", "Too many requests, please wait.")])]

    def stream(client):
        response = client.converse_stream(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
        list(response["stream"])
        return response

    assert outcome(server, hooked, throttled, stream) == outcome(server, plain, throttled, stream) == \
        (("EventStreamError", "throttlingException"), 1)  # botocore's: raised while iterating, never re-issued
    assert "StreamHooks" not in features_of(hooked)
    assert_one_warning(caplog, "_event_generator", "event streams")
    assert outcome(server, hooked, [Reply.service_unavailable()], converse)[0] == ("ok", 1)  # retries stay on


def test_without_the_signing_context_region_failover_is_off(fake_time, caplog, monkeypatch):
    import botocore.signers

    original = botocore.signers.RequestSigner.sign

    def sign(self, operation_name, request, *args, **kwargs):  # a botocore that ignores context['signing']
        request.context.pop("signing", None)
        return original(self, operation_name, request, *args, **kwargs)

    monkeypatch.setattr(botocore.signers.RequestSigner, "sign", sign)
    with BedrockServer() as home, BedrockServer() as west:
        home.default = Reply.service_unavailable()
        session = new_session()
        bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=2, fallback_regions=f"us-west-2={west.url}")
        client = make_client(session, home)
        with pytest.raises(ClientError):
            converse(client)
        assert len(home.requests) == 2 and not west.requests  # no failover signed for the wrong Region
        assert {sigv4_scope(r)["region"] for r in home.requests} == {"us-east-1"}
    assert_one_warning(caplog, "signing", "Region failover")


@pytest.mark.parametrize("feature,module_name,cls,attribute", [
    (compat.RETRY_QUOTA, "botocore.retries.standard", "RetryHandler", "_retry_quota"),
    (compat.SESSIONS, "boto3.session", "Session", "_session"),
    (compat.RETRY_SLOT, "botocore.hooks", "EventAliaser", "_emitter"),
])
def test_each_other_internal_is_detected(feature, module_name, cls, attribute, monkeypatch):
    renamed(monkeypatch, sys.modules[module_name], cls, attribute)
    assert attribute in (compat.missing(feature) or "")
    # aiobotocore's retry handler is botocore's: its quota goes with botocore's (tests/test_aio_compat.py)
    also = {compat.AIO_RETRY_QUOTA} if feature == compat.RETRY_QUOTA else set()
    others = {f for f in compat.FEATURES if compat.missing(f)} - {feature} - also - set(_lacking_here())
    assert not others


def _lacking_here() -> set[str]:
    return {f for f, since in INTRODUCED.items() if _version(botocore.__version__) < since}


def test_the_retry_slot_lookup_goes_through_the_aliaser(server, fake_time):
    """The slot compat checks is the one retry.py takes over: botocore's handler, found via ``_emitter``."""
    client = make_client(new_session(), server)
    handler = retry.botocore_retry_handler(client.meta.events, "bedrock-runtime")
    assert handler is not None and handler.__module__.startswith("botocore")


def test_doctor_prints_the_table_and_names_the_feature_a_missing_internal_turns_off(monkeypatch):
    from bedrock_hooks import doctor

    rows = doctor.doctor({}, sections=(doctor.check_compatibility,))
    assert [row.name for row in rows] == [check.internal for check in compat.CHECKS]
    pending = {row.internal for row in compat.report() if row.pending}  # aiobotocore absent: not probed
    assert {row.status for row in rows if row.name not in pending} <= {"ok", "warn"}
    assert {row.status for row in rows if row.name in pending} <= {"info"}
    renamed(monkeypatch, sys.modules["botocore.retries.standard"], "RetryHandler", "_retry_quota")
    compat.reset()
    text = doctor.render_checks(doctor.doctor({}, sections=(doctor.check_compatibility,)))
    line = next(line for line in text.splitlines() if "RetryHandler._retry_quota" in line)
    assert line.lstrip().startswith("[warn]") and "retry quota" in line, text


def test_legacy_mode_budget_builds_its_checker_on_botocore_before_the_throttling_detector(monkeypatch, server,
                                                                                          fake_time, caplog):
    """Regression: budget.py built its legacy-mode retry quota checker with the two-argument constructor of
    newer botocore; on 1.40.61 and older that raised TypeError in attach, and every legacy-mode client (the
    default mode) lost retry decisions and stream hints."""
    from botocore.retries import quota, standard

    class OldChecker(standard.RetryQuotaChecker):  # botocore <= 1.40.61: RetryQuotaChecker(quota)
        def __init__(self, quota):
            super().__init__(quota)

    monkeypatch.setattr(standard, "RetryQuotaChecker", OldChecker)
    assert isinstance(compat.new_retry_quota_checker()._quota, quota.RetryQuota)
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server, mode="legacy")
    assert {"ClientHooks", "StreamHooks"} <= set(features_of(client))
    server.script(DAILY_QUOTA)
    with pytest.raises(ClientError) as raised:
        converse(client)
    assert raised.value.response["BedrockHooks"]["entry"] == "DailyTokenQuotaExceeded" and len(server.requests) == 1
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
