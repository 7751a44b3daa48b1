"""Secrets never leak: with every logger at DEBUG, across retries, clock-skew correction, credential
refresh, streams, hints and keep-alive, nothing bedrock-hooks produces contains a credential.

Scanned: every log record of the ``bedrock_hooks*`` loggers (message and traceback), every hint line,
exception message/args, ``response["BedrockHooks"]`` and ``exc.bedrock_hooks``. Looked for: the secret
access keys and session tokens (before and after a forced refresh), the access key id, and the
``Authorization`` header values and ``Signature=`` values the server really received. botocore itself
logs signed requests at DEBUG: its records are allowed to carry what plain botocore logs, but none of
them may be emitted from bedrock-hooks code, and a hooked run must not add secret-bearing records from
loggers that a plain run of the same calls does not have.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from pathlib import Path

import boto3
import pytest
from botocore.credentials import RefreshableCredentials

import bedrock_hooks
from bedrock_hooks.testing import EventFrame, Reply
from conftest import make_client

PACKAGE_DIR = str(Path(bedrock_hooks.__file__).resolve().parent)
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]

KEYS = [
    # (access key id, secret access key, session token): the first pair is refreshed into the second
    ("ASIASECRETSCANKEYID1", "wJalrSECRETscanKEY1/K7MDENG+bPxRfiCYzzzzzzzz", "FwoGZXIvYXdzTOKENscanONE1234567890abcdef"),
    ("ASIASECRETSCANKEYID2", "wJalrSECRETscanKEY2/K7MDENG+bPxRfiCYyyyyyyyy", "FwoGZXIvYXdzTOKENscanTWO1234567890abcdef"),
    ("ASIASECRETSCANKEYID3", "wJalrSECRETscanKEY3/K7MDENG+bPxRfiCYxxxxxxxx", "FwoGZXIvYXdzTOKENscanTHREE234567890abcdef"),
]
STATIC = ("AKIASECRETSCANSTATIC", "wJalrSECRETscanSTATIC/K7MDENG+bPxRfiCYwwwwww", None)


def refreshable_session() -> boto3.Session:
    keys = iter(KEYS)

    def refresh():
        key_id, secret, token = next(keys)
        expiry = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
        return {"access_key": key_id, "secret_key": secret, "token": token, "expiry_time": expiry}

    session = boto3.Session(region_name="us-east-1")
    session._session._credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "assume-role")
    return session


def static_session() -> boto3.Session:
    return boto3.Session(region_name="us-east-1", aws_access_key_id=STATIC[0], aws_secret_access_key=STATIC[1])


def _skewed(reply: Reply) -> Reply:
    return Reply.with_date(reply, datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=10))


def _stream_throttled():
    return Reply.stream([EventFrame.exception("throttlingException", "Too many requests, please wait.")])


def _stream_cut_after_content():
    return Reply.stream([*EventFrame.converse_text(["Hel", "lo"])[:2],
                         EventFrame.exception("internalServerException", "Internal error.")])


EXPIRED = Reply.error(403, "ExpiredTokenException", "The security token included in the request is expired")
SIGNATURE = Reply.error(403, "InvalidSignatureException", "Signature expired: 20250101T000000Z is now earlier than x")


def scenarios(server, fake_time, session, *, hooked: bool):
    """Every feature once, each ending in a result or a final error; yields the application's view."""
    if hooked:
        bedrock_hooks.install(session, runtime=fake_time.runtime(), pool_max_idle=1, max_attempts=3)
    client = make_client(session, server, read_timeout=0.3)
    control = make_client(session, server, service="bedrock", read_timeout=0.3)

    def converse():
        return client.converse(modelId=MODEL, messages=MESSAGES)

    def stream():
        return list(client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"])

    plan = [
        ([Reply.throttling(), Reply.service_unavailable(), Reply.reset()], converse),  # retries, then ok
        ([Reply.service_unavailable()] * 3, converse),  # retries, then a final error with a hint
        ([_skewed(SIGNATURE)], converse),  # clock skew measured, signing corrected, retried
        ([_skewed(SIGNATURE)] * 3, converse),  # skew that persists: final error with the measured skew
        ([EXPIRED], converse),  # refreshable credentials: forced refresh, retried
        ([EXPIRED] * 3, converse),  # still expired after the refresh: final error, credential source
        ([Reply.error(403, "AccessDeniedException", "User: arn:aws:sts::1:assumed-role/x is not authorized")], converse),
        ([Reply.reset()] * 3, converse),  # connection errors: hint on the exception + keep-alive note
        ([Reply.delay(1.0)] * 3, converse),  # read timeouts
        ([_stream_throttled()], stream),  # stream recovered by a re-issue
        ([_stream_cut_after_content()], stream),  # stream error after content: hint on EventStreamError
        ([Reply.validation()], lambda: control.list_foundation_models()),
        ([], lambda: control.list_foundation_models()),
    ]
    for script, call in plan:
        server.script(*script)
        try:
            yield "ok", call()
        except Exception as exc:  # noqa: BLE001
            yield "error", exc
        fake_time.now += 10  # pooled connections are now idle past pool_max_idle: eviction runs


def authorization_secrets(server) -> set[str]:
    found = set()
    for request in server.requests:
        auth = request.headers.get("Authorization")
        if auth:
            found.add(auth)
            found.update(re.findall(r"Signature=([0-9a-f]+)", auth))
        token = request.headers.get("X-Amz-Security-Token")
        if token:
            found.add(token)
    return found


def _record_text(record: logging.LogRecord) -> str:
    return logging.Formatter("%(message)s").format(record)


def _exception_texts(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc), *map(repr, exc.args)]
    info = getattr(exc, "bedrock_hooks", None)
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "BedrockHooks" in response:
        info = response["BedrockHooks"]
        texts.append(str(response.get("Error")))
    if info is not None:
        texts.append(json.dumps(info, default=str))
    return texts


def run(server, fake_time, caplog, session, *, hooked: bool):
    server.reset()
    caplog.clear()
    outcomes = list(scenarios(server, fake_time, session, hooked=hooked))
    records = list(caplog.records)
    return outcomes, records, authorization_secrets(server)


@pytest.fixture
def debug_logs(caplog):
    caplog.set_level(logging.DEBUG)  # root: botocore, urllib3, everything
    caplog.set_level(logging.DEBUG, logger="bedrock_hooks")
    return caplog


@pytest.mark.parametrize("make_session,keys", [(refreshable_session, KEYS), (static_session, [STATIC])],
                         ids=["refreshable", "static"])
def test_no_secret_in_logs_hints_or_errors(make_session, keys, server, fake_time, debug_logs):
    outcomes, records, received = run(server, fake_time, debug_logs, make_session(), hooked=True)
    secrets = {s for key in keys for s in key if s} | received
    assert any(s.startswith("AWS4-HMAC-SHA256") for s in received) and len(received) >= 4

    ours = [r for r in records if r.name == "bedrock_hooks" or r.name.startswith("bedrock_hooks.")]
    assert ours, "bedrock_hooks logged nothing at DEBUG: the scan would prove nothing"
    texts = [("log " + r.name, _record_text(r)) for r in ours]
    errors = [exc for kind, exc in outcomes if kind == "error"]
    hinted = [exc for exc in errors if "[bedrock-hooks]" in str(exc)]
    assert len(hinted) >= 6, [str(e) for e in errors]  # hints of every kind were produced and scanned
    infos = [(getattr(exc, "response", None) or {}).get("BedrockHooks") or getattr(exc, "bedrock_hooks", None)
             for exc in errors]
    details = json.dumps([i for i in infos if i], default=str)
    assert "clock_skew_seconds" in details and "credential_source" in details and "notes" in details
    for exc in errors:
        texts += [(f"exception {type(exc).__name__}", t) for t in _exception_texts(exc)]
    for where, text in texts:
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{where} contains a secret: {text[:300]}"
    # The refresh really happened (so the second key pair was in play and scanned for).
    if make_session is refreshable_session:
        assert any(KEYS[1][0] in s for s in received)

    # botocore's own DEBUG records: never emitted from bedrock-hooks code.
    for record in records:
        if any(s in _record_text(record) for s in secrets):
            assert not str(Path(record.pathname).resolve()).startswith(PACKAGE_DIR), record.getMessage()[:300]


def test_hooks_add_no_secret_bearing_log_source(server, fake_time, debug_logs):
    """The loggers whose records carry secrets are the same with and without the hooks (botocore's own)."""
    def secret_sources(hooked: bool) -> set[tuple[str, str]]:
        _, records, received = run(server, fake_time, debug_logs, refreshable_session(), hooked=hooked)
        secrets = {s for key in KEYS for s in key} | received
        return {(r.name, Path(r.pathname).name) for r in records if any(s in _record_text(r) for s in secrets)}

    plain = secret_sources(hooked=False)
    bedrock_hooks.uninstall("*")
    hooked = secret_sources(hooked=True)
    assert hooked <= plain, f"secret-bearing records only with the hooks: {hooked - plain}"
    assert not any(name.startswith("bedrock_hooks") for name, _ in hooked)
