"""Regression tests for defects 13 and 16 (issue 11): only public API and botocore's own attributes.

* 13: after ``install(client)``, a clock-skew correction and uninstall, ``get_current_datetime``
  stayed patched, and a function looked up while patched raised TypeError after the restore.
* 16: uninstall removed another library's wrapper of ``Session.create_client`` added after install.
"""

from __future__ import annotations

import datetime

import botocore.auth
import botocore.session
import pytest
import wrapt

import bedrock_hooks
from bedrock_hooks import remedies
from bedrock_hooks.testing import Reply
from conftest import converse, make_client, new_session

ORIGINAL_CREATE_CLIENT = vars(botocore.session.Session)["create_client"]
ORIGINAL_CLOCK = getattr(botocore.auth, "get_current_datetime", None)  # absent before botocore 1.40.2
clock_skew = pytest.mark.needs_internals("clock-skew")


@pytest.fixture(autouse=True)
def _original_functions_back():
    yield
    bedrock_hooks.uninstall("*")
    botocore.session.Session.create_client = ORIGINAL_CREATE_CLIENT
    if ORIGINAL_CLOCK is not None:
        botocore.auth.get_current_datetime = ORIGINAL_CLOCK


def hooked(client) -> bool:
    return any(k.startswith("bedrock-hooks") for k in client.meta.events._emitter._unique_id_handlers)


def skew_corrected_call(client, server) -> None:
    ahead = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=10)
    server.script(Reply.with_date(Reply.error(403, "InvalidSignatureException", "Signature expired: x"), ahead))
    converse(client)
    assert len(server.requests) == 2  # corrected and retried once


def otel_style_wrap(calls: list[str]) -> None:
    def wrapper(wrapped, instance, args, kwargs):
        calls.append(args[0] if args else kwargs.get("service_name"))
        return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper("botocore.session", "Session.create_client", wrapper)


def otel_style_unwrap() -> None:
    current = vars(botocore.session.Session)["create_client"]
    botocore.session.Session.create_client = current.__wrapped__


# -- defect 13: get_current_datetime after a client-only install -------------------------------------

@clock_skew
def test_clock_patch_is_undone_after_client_only_install_skew_fix_and_uninstall(server, fake_time):
    client = make_client(new_session(), server)
    bedrock_hooks.install(client, runtime=fake_time.runtime())
    skew_corrected_call(client, server)
    assert botocore.auth.get_current_datetime is not ORIGINAL_CLOCK
    bedrock_hooks.uninstall(client)
    assert botocore.auth.get_current_datetime is ORIGINAL_CLOCK
    assert not remedies.clock_patch_active()


@clock_skew
@pytest.mark.parametrize("scope", ["client", "session"])
def test_signing_clock_looked_up_while_patched_still_works_after_restore(scope, server, fake_time):
    session = new_session()
    client = make_client(session, server)
    installation = bedrock_hooks.install(client if scope == "client" else session, runtime=fake_time.runtime())
    if scope == "session":
        client = make_client(session, server)
    skew_corrected_call(client, server)
    looked_up = botocore.auth.get_current_datetime  # e.g. `from botocore.auth import get_current_datetime`
    installation.uninstall()
    assert looked_up is not ORIGINAL_CLOCK
    remedies.arm_signing_offset(3600.0)  # nothing may shift the time any more: the layer passes through
    try:
        value = looked_up()
    finally:
        remedies.disarm_signing_offset()
    assert isinstance(value, datetime.datetime)
    assert abs((value - ORIGINAL_CLOCK()).total_seconds()) < 5


@clock_skew
def test_clock_patch_is_held_until_the_last_corrected_client_detaches(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    first, second = make_client(session, server), make_client(session, server)
    skew_corrected_call(first, server)
    server.reset()
    skew_corrected_call(second, server)
    bedrock_hooks.uninstall(first)
    assert botocore.auth.get_current_datetime is not ORIGINAL_CLOCK  # `second` still signs corrected
    bedrock_hooks.uninstall(second)
    assert botocore.auth.get_current_datetime is ORIGINAL_CLOCK


# -- defect 16: another library's wrapper of Session.create_client -----------------------------------

def test_uninstall_keeps_a_create_client_wrapper_added_after_install(server, fake_time):
    session = new_session()
    installation = bedrock_hooks.install(session, runtime=fake_time.runtime())
    calls: list[str] = []
    otel_style_wrap(calls)
    installation.uninstall()
    current = vars(botocore.session.Session)["create_client"]
    assert isinstance(current, wrapt.FunctionWrapper), "the other library's wrapper was removed"
    client = make_client(session, server)
    assert calls == ["bedrock-runtime"] and not hooked(client)  # theirs runs, ours passes through
    converse(client)

    again = bedrock_hooks.install(session, runtime=fake_time.runtime())  # our layer, still in their chain, re-arms
    assert hooked(make_client(session, server)) and len(calls) == 2
    again.uninstall()
    otel_style_unwrap()  # they restore what they wrapped: our (pass-through) layer
    assert vars(botocore.session.Session)["create_client"] is not ORIGINAL_CREATE_CLIENT
    assert not hooked(make_client(session, server))
    bedrock_hooks.install(session).uninstall()  # on top again: this time the original comes back
    assert vars(botocore.session.Session)["create_client"] is ORIGINAL_CREATE_CLIENT


