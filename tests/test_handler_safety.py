"""Never break the host: a bug inside any handler of any feature is logged once and the call goes on
exactly as plain botocore would make it.

Each case below makes one internal function of the library raise (a ``RuntimeError`` or a
``KeyError``), runs the same scripted calls on a hooked client and on an un-hooked client of a plain
session, three times each, and proves:

* the application sees the same outcome (result or exception type, code and message), after the
  same number of HTTP requests, as with plain botocore;
* exactly one WARNING ``internal error in <handler>`` per handler and exception type, however many
  calls hit the bug.

Where only a hint-producing piece is broken while the retry decisions still work, the scripts are
ones where the library and botocore take the same decisions (3 attempts, as standard mode), so the
comparison stays exact; where the hint layer itself still works, the hint line is stripped before
comparing (the hint is another handler's work, not the broken one's).
"""

from __future__ import annotations

import datetime
import importlib
import logging
import re

import pytest

import bedrock_hooks
from bedrock_hooks import classification, features, retry as handlers, keepalive, remedies, failsafe as safety, streaming
from bedrock_hooks.hints import PREFIX
from bedrock_hooks.testing import EventFrame, Reply
from conftest import make_client, new_session

installation = importlib.import_module("bedrock_hooks.installation")

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]
REPEAT = 3

S503 = [Reply.service_unavailable()] * 3
RETRIED_OK = [Reply.throttling(), Reply.service_unavailable()]  # then the default: ok
VALIDATION = [Reply.validation()]
RESETS = [Reply.reset()] * 3
STREAM_THROTTLED = [Reply.stream([EventFrame.exception("throttlingException", "Too many requests, please wait.")])]
STREAM_INVALID = [Reply.stream([EventFrame.exception("validationException", "Input is too long for requested model.")])]
STREAM_CUT = [Reply.stream([*EventFrame.converse_text(["Hel", "lo"])[:2], EventFrame.reset()])]


def _skewed() -> list[Reply]:
    ahead = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=10)
    return [Reply.with_date(Reply.error(403, "InvalidSignatureException", "Signature expired: x"), ahead)]


def converse(client):
    response = client.converse(modelId=MODEL, messages=MESSAGES)
    return response["output"]["message"]["content"][0]["text"], response["ResponseMetadata"]["RetryAttempts"]


def converse_stream(client):
    response = client.converse_stream(modelId=MODEL, messages=MESSAGES)
    events = list(response["stream"])
    return [next(iter(e)) for e in events], response["ResponseMetadata"]["RetryAttempts"]


def list_models(client):
    return client.list_foundation_models()["modelSummaries"]


class Boom(RuntimeError):
    """The injected bug."""


def boom(*args, **kwargs):
    raise Boom("injected")


def boom_key(*args, **kwargs):
    raise KeyError("injected")


@pytest.fixture(autouse=True)
def _isolation(monkeypatch):
    # "once" is per process: start each test from zero. (Plain botocore's own backoff sleeps go to the
    # fake clock of conftest.py's botocore_time fixture.)
    monkeypatch.setattr(safety, "_reported", set())


def outcome(server, client, script, call, *, exact: bool):
    """What the application sees for one call: result or exception, and the requests it took."""
    server.reset()
    server.script(*script)
    try:
        seen = ("ok", call(client))
    except Exception as exc:  # noqa: BLE001
        message = str(exc.args[0]) if exc.args else str(exc)
        if not exact:
            message = message.split(f"\n{PREFIX}")[0]
        response = getattr(exc, "response", None) or {}
        meta = response.get("ResponseMetadata", {})
        seen = (type(exc).__name__, response.get("Error", {}).get("Code"), message, meta.get("RetryAttempts"),
                "BedrockHooks" in response if exact else None)
        assert not type(exc).__module__.startswith("bedrock_hooks"), exc
    return seen, len(server.requests)


def internal_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "bedrock_hooks" and r.levelno == logging.WARNING and "internal error in" in r.getMessage()]


def assert_logged_once(caplog, expected: set[str]) -> None:
    messages = internal_errors(caplog)
    assert len(messages) == len(set(messages)), f"logged more than once: {messages}"
    where = {re.search(r"internal error in (.*) \(\w+\); continuing", m).group(1) for m in messages}
    assert expected <= where, f"expected reports from {expected}, got {messages}"


def compare(server, fake_time, caplog, runs, expected, *, service="bedrock-runtime", exact=True, **install_kwargs):
    """Run each (script, call) REPEAT times on a plain and on a hooked client: same outcomes."""
    plain = make_client(new_session(), server, service=service)
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=3, **install_kwargs)
    hooked = make_client(session, server, service=service)
    for script, call in runs:
        for _ in range(REPEAT):
            want = outcome(server, plain, script, call, exact=exact)
            got = outcome(server, hooked, script, call, exact=exact)
            assert got == want
    assert_logged_once(caplog, expected)
    return hooked


# -- ClientHooks: needs-retry, after-call, after-call-error --------------------------------------------

@pytest.mark.parametrize("error", [boom, boom_key])
def test_classification_bug_leaves_every_call_to_botocore(error, server, fake_time, caplog, monkeypatch):
    monkeypatch.setattr(classification, "classify", error)  # the one classification every feature shares
    compare(server, fake_time, caplog,
            [(RETRIED_OK, converse), (S503, converse), (VALIDATION, converse), (RESETS, converse)],
            {"needs-retry", "after-call", "after-call-error"})


def test_hint_building_bug_leaves_messages_as_botocore_makes_them(server, fake_time, caplog, monkeypatch):
    monkeypatch.setattr(handlers, "build_info", boom)
    compare(server, fake_time, caplog, [(S503, converse), (VALIDATION, converse), (RESETS, converse)],
            {"after-call", "after-call-error"})


def test_annotation_bug_on_connection_errors(server, fake_time, caplog, monkeypatch):
    monkeypatch.setattr(handlers, "annotate_exception", boom)
    compare(server, fake_time, caplog, [(RESETS, converse)], {"after-call-error"})


def test_hint_line_bug_on_the_control_plane(server, fake_time, caplog, monkeypatch):
    monkeypatch.setattr(handlers, "hint_line", boom)
    compare(server, fake_time, caplog, [(VALIDATION, list_models), (S503, list_models)], {"after-call"},
            service="bedrock")


def test_clock_skew_measurement_bug_hands_the_decision_to_botocore(server, fake_time, caplog, monkeypatch):
    monkeypatch.setattr(remedies, "measure_skew", boom)
    compare(server, fake_time, caplog, [(_skewed(), converse)], {"needs-retry"}, exact=False)


def test_credential_refresh_bug_hands_the_decision_to_botocore(server, fake_time, caplog, monkeypatch):
    monkeypatch.setattr(remedies, "refresh_credentials", boom)
    expired = [Reply.error(403, "ExpiredTokenException", "The security token included in the request is expired")]
    compare(server, fake_time, caplog, [(expired, converse)], {"needs-retry"}, exact=False)


# -- ClientHooks: before-sign / before-send (only run once a skew was measured) --------------------------

def _signed_at(request) -> datetime.datetime:
    stamp = request.headers["X-Amz-Date"]
    return datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


@pytest.mark.needs_internals("clock-skew")
@pytest.mark.parametrize("broken,where,corrected", [
    ("arm_signing_offset", "before-sign", False),  # the retry is signed with botocore's own clock
    ("disarm_signing_offset", "before-send", True),  # the offset was armed and used: nothing lost
])
def test_signing_clock_bug_never_fails_the_call(broken, where, corrected, server, fake_time, caplog, monkeypatch):
    monkeypatch.setattr(remedies, broken, boom)
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    for _ in range(REPEAT):
        server.reset()
        skewed = _skewed()
        server.script(*skewed)
        assert converse(client)[0]  # the call succeeds: no Boom reaches the application
        retry = server.requests[-1]
        now = datetime.datetime.now(datetime.timezone.utc)
        skew = abs((_signed_at(retry) - now).total_seconds())
        assert (skew > 500) if corrected else (skew < 30)
    assert_logged_once(caplog, {where})


# -- StreamHooks: before-parameter-build, after-call, in-stream recovery ---------------------------------

ALL_STREAMS = [STREAM_THROTTLED, STREAM_INVALID, STREAM_CUT, []]
STREAM_CASES = [
    # (id, patch, scripts, exact, expected reports). With recovery intact (build_info), a throttled
    # first frame is recovered -- better than botocore, so not compared; every stream that fails is.
    # recoverable() is consulted when the feature attaches: the stream feature is then left off entirely
    ("recoverable", lambda m: m.setattr(streaming.StreamHooks, "recoverable", boom), ALL_STREAMS, True,
     {"attach"}),
    ("event_stream_member", lambda m: m.setattr(streaming, "event_stream_member", boom), ALL_STREAMS, True,
     {"after-call (stream)"}),
    ("classify", lambda m: m.setattr(streaming, "classify", boom), ALL_STREAMS, True, {"stream recovery"}),
    ("build_info", lambda m: m.setattr(streaming, "build_info", boom), [STREAM_INVALID, STREAM_CUT, []], True,
     {"stream recovery"}),
]


@pytest.mark.parametrize("case", STREAM_CASES, ids=[c[0] for c in STREAM_CASES])
def test_stream_bug_leaves_the_stream_as_botocore_makes_it(case, server, fake_time, caplog, monkeypatch):
    _, patch, scripts, exact, expected = case
    patch(monkeypatch)
    compare(server, fake_time, caplog, [(script, converse_stream) for script in scripts], expected, exact=exact)


# -- keep-alive: the hint note, the pool hooks, attach -----------------------------------------------
# The patched names are looked up directly (raising=True): a rename fails these tests, never skips them.

def _hygiene(client):
    features = installation.attached_features(client)
    found = [f for f in features if isinstance(f, keepalive.ConnectionHygiene)]
    assert found, f"keep-alive feature not attached: {features}"
    return found[0]


def test_keepalive_note_bug(server, fake_time, caplog, monkeypatch):
    monkeypatch.setattr(keepalive.ConnectionHygiene, "describe", boom)
    compare(server, fake_time, caplog, [(RESETS, converse)], {"keepalive-note"}, exact=False)


def test_keepalive_attach_bug_leaves_sockets_to_botocore(server, fake_time, caplog, monkeypatch):
    monkeypatch.setattr(keepalive, "keepalive_options", boom)
    hooked = compare(server, fake_time, caplog, [(S503, converse), (RESETS, converse), (RETRIED_OK, converse)],
                     {"attach"}, exact=False)
    assert not any(isinstance(f, keepalive.ConnectionHygiene) for f in installation.attached_features(hooked))


def test_pool_eviction_bug_keeps_the_connection(server, fake_time, caplog, monkeypatch):
    monkeypatch.setattr(keepalive, "_evict", boom)
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), pool_max_idle=1)
    client = make_client(session, server)
    _hygiene(client)
    server.reset()
    for _ in range(REPEAT):
        converse(client)
        fake_time.now += 10  # every pooled connection is now "idle" past the limit
    assert len(server.requests) == REPEAT
    assert_logged_once(caplog, {"pool-get"})


def test_pool_return_bug_keeps_the_connection(server, fake_time, caplog, monkeypatch):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    hygiene = _hygiene(client)
    classes = list(hygiene._classes.values())
    assert classes, "no pool class carries the eviction hook"
    for cls in classes:
        monkeypatch.setattr(cls, "_bh_clock", staticmethod(boom), raising=True)
    server.reset()
    for _ in range(REPEAT):
        converse(client)
    assert len(server.requests) == REPEAT
    assert server.connections >= 1
    assert_logged_once(caplog, {"pool-put"})


# -- install: the create_client hook and a feature whose attach fails halfway ------------------------

def test_create_client_hook_bug_returns_a_plain_client(server, fake_time, caplog, monkeypatch):
    monkeypatch.setattr(installation, "_after_create_client", boom)
    hooked = compare(server, fake_time, caplog,
                     [(S503, converse), (VALIDATION, converse), (RESETS, converse), (STREAM_THROTTLED, converse_stream)],
                     {"create-client"})
    assert installation.installation_for(hooked) is None and installation.attached_features(hooked) == []


def test_attach_failing_halfway_restores_botocore(server, fake_time, caplog, monkeypatch):
    original = features.Registrations.add

    def add(self, event, handler, unique_id, *, first=False):
        if event.startswith("after-call."):  # after needs-retry already replaced botocore's handler
            raise Boom("injected")
        return original(self, event, handler, unique_id, first=first)

    monkeypatch.setattr(features.Registrations, "add", add)
    hooked = compare(server, fake_time, caplog, [(S503, converse), (VALIDATION, converse), (RETRIED_OK, converse)],
                     {"attach"})
    assert handlers.botocore_retry_handler(hooked.meta.events, "bedrock-runtime").__module__.startswith("botocore")
