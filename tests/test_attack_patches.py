"""Process-wide patches next to real instrumentation, undone in every order (issue 11, defects 13, 16, 17).

tests/test_patches_regressions.py covers another wrapper added after install and removed after our
uninstall. Here: the other library undoes its wrapper *first* (OpenTelemetry's own ``unwrap``), the
real ``BotocoreInstrumentor`` instrumented and uninstrumented before and after install/uninstall, and
a clock-corrected client the application drops without ``uninstall()``.
"""

from __future__ import annotations

import datetime
import gc
import weakref

import botocore.auth
import botocore.client
import botocore.session
import pytest
import wrapt

import bedrock_hooks
from _requires import require
from bedrock_hooks import installation, patches
from bedrock_hooks.testing import Reply
from conftest import converse, make_client, new_session
from test_patches_regressions import _original_functions_back  # noqa: F401  (autouse)

ORIGINAL_CREATE_CLIENT = vars(botocore.session.Session)["create_client"]
ORIGINAL_CLOCK = getattr(botocore.auth, "get_current_datetime", None)  # absent before botocore 1.40.2
ORIGINAL_API_CALL = vars(botocore.client.BaseClient)["_make_api_call"]


def _wrap_create_client(calls: list[str]) -> None:
    def wrapper(wrapped, instance, args, kwargs):
        calls.append(args[0] if args else kwargs.get("service_name"))
        return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper("botocore.session", "Session.create_client", wrapper)


def test_their_unwrap_before_our_uninstall_puts_the_original_back(server, fake_time):
    unwrap = require("opentelemetry.instrumentation.utils", group="otel").unwrap
    session = new_session()
    ours = bedrock_hooks.install(session, runtime=fake_time.runtime())
    calls: list[str] = []
    _wrap_create_client(calls)
    unwrap(botocore.session.Session, "create_client")  # they leave first: our layer is on top again
    assert installation.attached_features(make_client(session, server)) and calls == []
    ours.uninstall()
    assert vars(botocore.session.Session)["create_client"] is ORIGINAL_CREATE_CLIENT
    assert patches.CREATE_CLIENT.state() is patches.State.OFF
    converse(make_client(session, server))


@pytest.mark.parametrize("order", ["install instrument uninstall uninstrument", "install instrument uninstrument uninstall",
                                   "instrument install uninstall uninstrument", "instrument install uninstrument uninstall"])
def test_real_botocore_instrumentor_and_the_library_in_every_order(order, server, fake_time):
    sdk_trace = require("opentelemetry.sdk.trace", group="otel")
    instrumentor = require("opentelemetry.instrumentation.botocore", group="otel").BotocoreInstrumentor()
    ended: list[str] = []

    class Recorder(sdk_trace.SpanProcessor):
        def on_end(self, span) -> None:
            ended.append(span.name)

    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(Recorder())
    hooks = None
    instrumented = installed = False
    try:
        for step in order.split():
            if step == "install":
                hooks, installed = bedrock_hooks.install(runtime=fake_time.runtime()), True
            elif step == "uninstall":
                hooks.uninstall()
                installed = False
            elif step == "instrument":
                instrumentor.instrument(tracer_provider=provider)
                instrumented = True
            else:
                instrumentor.uninstrument()
                instrumented = False
            ended.clear()
            sleeps = len(fake_time.sleeps)
            client = make_client(new_session(), server)
            server.script(Reply.service_unavailable())
            assert converse(client)["ResponseMetadata"]["RetryAttempts"] == 1  # botocore or the library retried
            assert bool(installation.attached_features(client)) is installed
            assert (len(fake_time.sleeps) > sleeps) is installed  # the library slept its own backoff
            assert bool(ended) is instrumented  # one span per call while instrumented, and it ended
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    assert vars(botocore.session.Session)["create_client"] is ORIGINAL_CREATE_CLIENT
    assert vars(botocore.client.BaseClient)["_make_api_call"] is ORIGINAL_API_CALL


@pytest.mark.needs_internals("clock-skew")
def test_a_dropped_clock_corrected_client_gives_the_signing_clock_back(server, fake_time):
    client = make_client(new_session(), server)
    bedrock_hooks.install(client, runtime=fake_time.runtime())  # the installation is not even kept
    ahead = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=10)
    server.script(Reply.with_date(Reply.error(403, "InvalidSignatureException", "Signature expired: x"), ahead))
    converse(client)
    looked_up = botocore.auth.get_current_datetime
    assert looked_up is not ORIGINAL_CLOCK  # corrected: the patch is held by this client
    dropped = weakref.ref(client)
    del client
    gc.collect()
    assert dropped() is None
    assert botocore.auth.get_current_datetime is ORIGINAL_CLOCK
    assert isinstance(looked_up(), datetime.datetime)  # a copy taken while patched still works
