"""The success path costs almost nothing (issue 11): what a successful call must *not* do.

Deterministic checks, no timing (the figures are in bench/overhead.py): the rate limiter takes no lock
and updates no meter while nothing was throttled; the fallback feature puts no handler on after-call;
a remembered inference profile for one model costs another model's calls no routing work.
"""

from __future__ import annotations

import pytest

import bedrock_hooks
from bedrock_hooks import fallbacks, ratelimit
from bedrock_hooks.testing import Reply
from conftest import converse, make_client, new_session
from _shared_state import fresh_shared_state  # noqa: F401  (autouse)

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
PROFILED = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ON_DEMAND = Reply.error(400, "ValidationException",
                        f"Invocation of model ID {PROFILED} with on-demand throughput isn\u2019t supported. Retry "
                        "your request with the ID or ARN of an inference profile that contains this model.")



class Counter:
    """Stands in for a method and counts calls, delegating to the original."""

    def __init__(self, original) -> None:
        self.original, self.calls = original, 0

    def __get__(self, instance, owner):
        return lambda *args, **kwargs: self(instance, *args, **kwargs)

    def __call__(self, instance, *args, **kwargs):
        self.calls += 1
        return self.original(instance, *args, **kwargs)


def test_idle_rate_limiter_takes_no_lock_and_meters_nothing(server, fake_time, monkeypatch):
    client = make_client(new_session(), server)
    bedrock_hooks.install(client, runtime=fake_time.runtime())
    counted = {name: Counter(getattr(ratelimit.Bucket, name)) for name in ("on_response", "before_send")}
    for name, counter in counted.items():
        monkeypatch.setattr(ratelimit.Bucket, name, counter)
    for _ in range(10):
        converse(client)
    assert {name: c.calls for name, c in counted.items()} == {"on_response": 0, "before_send": 0}


def test_fallbacks_put_nothing_on_after_call(server, fake_time):
    client = make_client(new_session(), server)
    bedrock_hooks.install(client, runtime=fake_time.runtime(), fallbacks={MODEL: [PROFILED]})
    ids = client.meta.events._emitter._unique_id_handlers
    assert any(i.startswith("bedrock-hooks-route-") for i in ids)
    assert not any(i.startswith("bedrock-hooks-served-") for i in ids)  # served_by is set on needs-retry


def test_a_remembered_profile_costs_other_models_no_routing(server, fake_time, monkeypatch):
    client = make_client(new_session(), server)
    bedrock_hooks.install(client, runtime=fake_time.runtime())
    server.handler = lambda request: ON_DEMAND if request.model_id == PROFILED else None
    assert converse(client, PROFILED)["BedrockHooks"]["served_by"]["model"] == f"us.{PROFILED}"
    counted = {name: Counter(getattr(fallbacks.Router, name)) for name in ("remembered_profile", "circuit_open")}
    for name, counter in counted.items():
        monkeypatch.setattr(fallbacks.Router, name, counter)
    for _ in range(5):
        converse(client, MODEL)
    assert {name: c.calls for name, c in counted.items()} == {"remembered_profile": 0, "circuit_open": 0}
    assert converse(client, PROFILED)["BedrockHooks"]["served_by"]["model"] == f"us.{PROFILED}"  # still routed
    assert counted["remembered_profile"].calls == 1
