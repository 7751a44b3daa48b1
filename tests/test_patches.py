"""Process-wide patches: reference-counted, undone on every last-uninstall path, never undoing others.

Each test uses real botocore sessions and clients against the loopback server; "another library"
is modelled the way OpenTelemetry's botocore instrumentation wraps and unwraps (wrapt).
"""

from __future__ import annotations

import datetime
import gc

import botocore.auth
import botocore.session
import pytest
import wrapt

import bedrock_hooks
from bedrock_hooks import patches, remedies
from bedrock_hooks.patches import CREATE_CLIENT, SIGNING_CLOCK, State
from conftest import converse, make_client, new_session
from test_patches_regressions import (ORIGINAL_CLOCK, ORIGINAL_CREATE_CLIENT, _original_functions_back,  # noqa: F401
                                      clock_skew, hooked, otel_style_wrap)

# -- wrappers of other libraries ---------------------------------------------------------------------

def test_a_wrapper_added_before_install_is_what_uninstall_puts_back(server, fake_time):
    calls: list[str] = []
    otel_style_wrap(calls)
    theirs = vars(botocore.session.Session)["create_client"]
    session = new_session()
    installation = bedrock_hooks.install(session, runtime=fake_time.runtime())
    assert hooked(make_client(session, server)) and calls == ["bedrock-runtime"]
    installation.uninstall()
    assert vars(botocore.session.Session)["create_client"] is theirs
    assert not hooked(make_client(session, server)) and len(calls) == 2


def test_create_client_looked_up_while_patched_keeps_working_after_uninstall(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    bound = session._session.create_client  # bound to our layer
    unbound = botocore.session.Session.create_client
    bedrock_hooks.uninstall(session)
    for create in (bound, lambda *a, **k: unbound(session._session, *a, **k)):
        client = create("bedrock-runtime", region_name="us-east-1", endpoint_url=server.url)
        assert not hooked(client)
        converse(client)


# -- reference counting over installations ------------------------------------------------------------

def test_create_client_is_patched_while_any_session_or_global_installation_holds_it(server, fake_time):
    client_only = bedrock_hooks.install(make_client(new_session(), server), runtime=fake_time.runtime())
    assert client_only.active and CREATE_CLIENT.state() is State.OFF  # a client install needs no hook point
    one, two = new_session(), new_session()
    first = bedrock_hooks.install(one, runtime=fake_time.runtime())
    second = bedrock_hooks.install(two, runtime=fake_time.runtime())
    everywhere = bedrock_hooks.install(runtime=fake_time.runtime())
    for installation in (first, everywhere):
        installation.uninstall()
        assert CREATE_CLIENT.state() is State.ON
    assert hooked(make_client(two, server)) and not hooked(make_client(one, server))
    second.uninstall()
    assert vars(botocore.session.Session)["create_client"] is ORIGINAL_CREATE_CLIENT


def test_a_collected_session_installation_gives_its_share_back(server, fake_time):
    bedrock_hooks.install(new_session(), runtime=fake_time.runtime())  # neither session nor handle kept
    gc.collect()
    assert vars(botocore.session.Session)["create_client"] is ORIGINAL_CREATE_CLIENT


@clock_skew
def test_holders_are_counted_once_and_tokens_work():
    assert SIGNING_CLOCK.acquire("token") and SIGNING_CLOCK.acquire("token")
    SIGNING_CLOCK.release("token")
    assert botocore.auth.get_current_datetime is ORIGINAL_CLOCK
    SIGNING_CLOCK.release("token")  # idempotent


def test_a_missing_attribute_is_reported_once_and_nothing_is_patched(monkeypatch, caplog):
    patch = patches.Patch("botocore.auth", None, "no_such_function", where="test")
    assert patch.acquire("x") is False and patch.acquire("y") is False
    assert patch.state() is State.UNAVAILABLE and not patch.held_by("x")
    assert sum("no_such_function" in r.getMessage() for r in caplog.records) == 1


@clock_skew
def test_a_failing_hook_returns_the_original_result(caplog):
    patch = patches.Patch("botocore.auth", None, "get_current_datetime", where="test-hook")
    patch.set_hook(lambda result, *a, **k: 1 / 0)
    assert patch.acquire("x")
    try:
        assert isinstance(botocore.auth.get_current_datetime(), datetime.datetime)
    finally:
        patch.release("x")
    assert botocore.auth.get_current_datetime is ORIGINAL_CLOCK
    assert any("test-hook" in r.getMessage() for r in caplog.records)
