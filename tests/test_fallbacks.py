"""Fallbacks against local Bedrock-shaped servers with real boto3 clients: models, profiles, circuit, Regions."""

from __future__ import annotations

import json
import logging

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks import fallbacks
from bedrock_hooks.config import load_settings
from bedrock_hooks.quota_scope import QuotaScope
from bedrock_hooks.testing import BedrockServer, Reply, sigv4_scope, verify_sigv4
from conftest import CREDS, FakeTime, converse, make_client, new_session
from _shared_state import fresh_shared_state  # noqa: F401  (autouse)

PRIMARY = "anthropic.claude-3-5-sonnet-20240620-v1:0"
SECOND = "anthropic.claude-3-haiku-20240307-v1:0"
OTHER_PROVIDER = "amazon.nova-pro-v1:0"

NOT_FOUND = Reply.error(404, "ResourceNotFoundException",
                        "Could not resolve the foundation model from the provided model identifier.")
EOL = Reply.error(404, "ResourceNotFoundException", "This model version has reached the end of its life. Please "
                  "refer to the AWS documentation for more details.")
NO_ACCESS = Reply.error(403, "AccessDeniedException", "You don't have access to the model with the specified model ID.")
ON_DEMAND = Reply.error(400, "ValidationException",
                        f"Invocation of model ID {PRIMARY} with on-demand throughput isn\u2019t supported. Retry your "
                        "request with the ID or ARN of an inference profile that contains this model.")



def by_model(behaviour: dict[str, Reply]):
    """A server handler answering per model ID: one server stands in for many models."""
    return lambda request: behaviour.get(request.model_id)


def hooked(server, fake_time, **overrides):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), **overrides)
    return make_client(session, server)


@pytest.mark.parametrize("failure", [NOT_FOUND, EOL, NO_ACCESS], ids=["not-found", "end-of-life", "no-access"])
def test_model_that_cannot_serve_moves_to_the_next_alternative(failure, server, fake_time):
    client = hooked(server, fake_time, fallbacks={PRIMARY: [SECOND, OTHER_PROVIDER]})
    server.handler = by_model({PRIMARY: failure})
    response = converse(client, PRIMARY)
    assert [r.model_id for r in server.requests] == [PRIMARY, SECOND]
    info = response["BedrockHooks"]
    assert info["served_by"] == {"model": SECOND, "region": "us-east-1"}
    assert info["requested_model"] == PRIMARY
    assert fake_time.sleeps == []


def test_chain_is_walked_in_order_and_validation_is_never_a_reason(server, fake_time):
    client = hooked(server, fake_time, fallbacks={PRIMARY: [SECOND, OTHER_PROVIDER]})
    server.handler = by_model({PRIMARY: NOT_FOUND, SECOND: NO_ACCESS})
    assert converse(client, PRIMARY)["BedrockHooks"]["served_by"]["model"] == OTHER_PROVIDER
    server.reset()
    server.handler = by_model({PRIMARY: Reply.validation("Malformed input request, please reformat your input.")})
    with pytest.raises(ClientError):
        converse(client, PRIMARY)
    assert len(server.requests) == 1


def test_access_denied_everywhere_fails_after_the_chain_with_the_route(server, fake_time):
    client = hooked(server, fake_time, fallbacks={PRIMARY: [SECOND]})
    server.default = NO_ACCESS
    with pytest.raises(ClientError) as raised:
        converse(client, PRIMARY)
    assert [r.model_id for r in server.requests] == [PRIMARY, SECOND]
    info = raised.value.response["BedrockHooks"]
    assert info["entry"] == "ModelAccessNotGranted"
    assert [step["to_model"] for step in info["route"]] == [SECOND]
    assert f"moved the call from {PRIMARY} to {SECOND}" in " ".join(info["details"]["notes"])


def test_throttling_moves_only_after_the_retry_budget(server, fake_time):
    client = hooked(server, fake_time, fallbacks={PRIMARY: [SECOND]}, max_attempts=3, circuit_threshold=0)
    server.handler = by_model({PRIMARY: Reply.throttling()})
    response = converse(client, PRIMARY)
    assert [r.model_id for r in server.requests] == [PRIMARY] * 3 + [SECOND]
    assert response["BedrockHooks"]["served_by"]["model"] == SECOND
    assert len(fake_time.sleeps) == 2


def test_invoke_model_never_crosses_providers_silently(server, fake_time, caplog):
    caplog.set_level(logging.INFO, logger="bedrock_hooks")
    client = hooked(server, fake_time, fallbacks={PRIMARY: [OTHER_PROVIDER, SECOND]})
    server.handler = by_model({PRIMARY: NOT_FOUND})
    response = client.invoke_model(modelId=PRIMARY, body=json.dumps({"messages": []}))
    assert [r.model_id for r in server.requests] == [PRIMARY, SECOND]  # nova skipped: another body format
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert any("body format differs" in r.getMessage() for r in caplog.records)
    server.reset()
    server.handler = by_model({PRIMARY: NOT_FOUND})
    cross = hooked(server, fake_time, fallbacks={PRIMARY: [OTHER_PROVIDER]}, fallback_cross_provider=True)
    cross.invoke_model(modelId=PRIMARY, body=b"{}")
    assert [r.model_id for r in server.requests] == [PRIMARY, OTHER_PROVIDER]


def test_converse_stream_falls_back_before_the_stream_starts(server, fake_time):
    client = hooked(server, fake_time, fallbacks={PRIMARY: [SECOND]})
    server.handler = by_model({PRIMARY: EOL})
    response = client.converse_stream(modelId=PRIMARY, messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert any("contentBlockDelta" in e for e in response["stream"])
    assert [r.model_id for r in server.requests] == [PRIMARY, SECOND]


def test_on_demand_unsupported_upgrades_to_the_regional_profile_and_remembers(server, fake_time):
    client = hooked(server, fake_time)  # no fallbacks configured: the upgrade is on by default
    server.handler = by_model({PRIMARY: ON_DEMAND})
    response = converse(client, PRIMARY)
    assert [r.model_id for r in server.requests] == [PRIMARY, f"us.{PRIMARY}"]
    assert response["BedrockHooks"]["served_by"]["model"] == f"us.{PRIMARY}"
    converse(client, PRIMARY)  # the next call goes straight to the profile
    assert server.requests[-1].model_id == f"us.{PRIMARY}" and len(server.requests) == 3
    assert verify_sigv4(server.requests[-1], CREDS["aws_secret_access_key"], region="us-east-1")


def test_profile_upgrade_can_be_turned_off(server, fake_time, monkeypatch):
    monkeypatch.setenv("BEDROCK_HOOKS_INFERENCE_PROFILES", "off")
    client = hooked(server, fake_time)
    server.handler = by_model({PRIMARY: ON_DEMAND})
    with pytest.raises(ClientError) as raised:
        converse(client, PRIMARY)
    assert raised.value.response["BedrockHooks"]["entry"] == "InferenceProfileRequired"
    assert len(server.requests) == 1


@pytest.mark.parametrize("region,prefix", [("us-east-1", "us"), ("eu-west-1", "eu"), ("ap-northeast-1", "apac"),
                                           ("us-gov-west-1", "us-gov")])
def test_profile_prefix_table(region, prefix):
    assert fallbacks.profile_for(PRIMARY, region) == f"{prefix}.{PRIMARY}"
    assert fallbacks.profile_for(f"us.{PRIMARY}", region) is None


def test_circuit_opens_routes_to_the_fallback_and_closes_on_schedule(server):
    clock = FakeTime()
    session = new_session()
    bedrock_hooks.install(session, runtime=clock.runtime(), fallbacks={PRIMARY: [SECOND]}, max_attempts=2,
                          circuit_threshold=4, circuit_window=60, circuit_cooldown=30)
    client = make_client(session, server)
    server.handler = by_model({PRIMARY: Reply.throttling()})
    converse(client, PRIMARY)  # 2 throttles on PRIMARY, then SECOND
    converse(client, PRIMARY)  # 2 more: the 4th opens the circuit
    sent = len(server.requests)
    assert [r.model_id for r in server.requests].count(PRIMARY) == 4
    response = converse(client, PRIMARY)  # open: straight to the fallback, PRIMARY not hammered
    assert [r.model_id for r in server.requests[sent:]] == [SECOND]
    assert response["BedrockHooks"]["route"][0]["reason"] == "circuit open"
    clock.now += 31  # cool-down over: PRIMARY gets traffic again
    server.handler = None
    converse(client, PRIMARY)
    assert server.requests[-1].model_id == PRIMARY


def test_circuit_state_is_bounded_and_thread_safe():
    import threading

    router = fallbacks.Router(load_settings({}, fallbacks={f"m{i}": ["alt"] for i in range(2000)},
                                            circuit_threshold=3))
    errors = []

    def hammer(offset):
        try:
            for i in range(2000):
                scope = QuotaScope("acct", "us-east-1", f"model:m{(i + offset) % 2000}", "https://x")
                router.record_pressure(scope, float(i))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=hammer, args=(k * 100,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert router.store.size("circuit") <= fallbacks._MAX_TRACKED


def test_region_failover_for_persistent_503s_is_signed_for_the_new_region(fake_time):
    with BedrockServer() as home, BedrockServer() as west:
        home.default = Reply.service_unavailable()
        session = new_session()
        bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=2,
                              fallback_regions=f"us-west-2={west.url}")
        client = session.client("bedrock-runtime", endpoint_url=home.url,
                                config=Config(retries={"mode": "standard"}, read_timeout=5))
        response = converse(client, PRIMARY)
        assert len(home.requests) == 2 and len(west.requests) == 1
        assert response["BedrockHooks"]["served_by"] == {"model": PRIMARY, "region": "us-west-2"}
        moved = west.requests[0]
        assert sigv4_scope(moved)["region"] == "us-west-2"
        assert verify_sigv4(moved, CREDS["aws_secret_access_key"], region="us-west-2")
        assert verify_sigv4(home.requests[0], CREDS["aws_secret_access_key"], region="us-east-1")


def test_region_failover_is_opt_in(server, fake_time):
    client = hooked(server, fake_time, max_attempts=2)
    server.default = Reply.service_unavailable()
    with pytest.raises(ClientError):
        converse(client, PRIMARY)
    assert len(server.requests) == 2


def test_fallback_configuration_syntaxes(tmp_path, caplog):
    compact = load_settings({"BEDROCK_HOOKS_FALLBACKS": f"{PRIMARY}={SECOND},{OTHER_PROVIDER};x.y=z.w"})
    assert compact.fallbacks == ((PRIMARY, (SECOND, OTHER_PROVIDER)), ("x.y", ("z.w",)))
    path = tmp_path / "fallbacks.json"
    path.write_text(json.dumps({PRIMARY: [SECOND]}))
    assert load_settings({"BEDROCK_HOOKS_FALLBACKS": str(path)}).fallbacks == ((PRIMARY, (SECOND,)),)
    toml = tmp_path / "fallbacks.toml"
    toml.write_text(f'[fallbacks]\n"{PRIMARY}" = ["{SECOND}"]\n')
    assert load_settings({"BEDROCK_HOOKS_FALLBACKS": str(toml)}).fallbacks == ((PRIMARY, (SECOND,)),)
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    assert load_settings({"BEDROCK_HOOKS_FALLBACKS": str(tmp_path / "missing.json")}).fallbacks == ()
    assert any("BEDROCK_HOOKS_FALLBACKS" in r.getMessage() for r in caplog.records)


def test_uninstall_removes_routing(server, fake_time):
    session = new_session()
    installation = bedrock_hooks.install(session, runtime=fake_time.runtime(), fallbacks={PRIMARY: [SECOND]})
    client = make_client(session, server)
    installation.uninstall()
    server.handler = by_model({PRIMARY: NOT_FOUND})
    with pytest.raises(ClientError):
        converse(client, PRIMARY)
    assert len(server.requests) == 1
    assert boto3  # the module is used through conftest helpers
