"""``bedrock-hooks explain`` says what the library will actually do, under the current settings.

Each scenario pastes an error into ``explain`` (as a user would), then makes the library meet the
same error on the wire (a real boto3 client, the loopback server answering every request with it)
with the same ``BEDROCK_HOOKS_*`` environment, and compares the claim with what the server saw:
how many times the request was sent, to which models or Regions it moved, and what the final
error carries.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import BotoCoreError, ClientError, EventStreamError

import bedrock_hooks
from bedrock_hooks import fallbacks
from bedrock_hooks.config import load_settings
from bedrock_hooks.explain import Behaviour, behaviour, explain_lookup
from bedrock_hooks.testing import EventFrame, Reply, sigv4_scope
from conftest import converse, make_client, new_session

PRIMARY = "anthropic.claude-3-5-sonnet-20241022-v2:0"
SECOND = "anthropic.claude-3-haiku-20240307-v1:0"
REGION = "us-east-1"
REPO = Path(__file__).resolve().parents[1]

ON_DEMAND = (f"Invocation of model ID {PRIMARY} with on-demand throughput isn\u2019t supported. Retry your request "
             "with the ID or ARN of an inference profile that contains this model.")
DAILY = "Too many tokens per day, please wait before trying again."
THROTTLED = "Too many requests, please wait before trying again."
FTU = ("Model use case details have not been submitted for this account. Fill out the Anthropic use case details "
       "form before using the model. If you have already filled out the form, try again in 15 minutes.")
BEING_PROCESSED = "Your subscription to this model is still being processed. Try again after 5 minutes."


@pytest.fixture(autouse=True)
def _fresh_routers():
    fallbacks.reset_routers()  # a remembered inference profile must not leak into the next scenario
    yield
    fallbacks.reset_routers()


def claim(text: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, **call: object) -> Behaviour:
    """What explain says, with ``env`` as the process environment (the library reads the same)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    call.setdefault("region", REGION)
    found = explain_lookup(text, **call)  # type: ignore[arg-type]
    assert found is not None, text
    return behaviour(found, load_settings())


def observe(server, fake_time, reply: Reply, model: str = PRIMARY) -> tuple[list, Exception | None]:
    """Every request the library sends for one call that meets ``reply`` on every attempt."""
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    server.default = reply
    try:
        converse(client, model)
    except (ClientError, BotoCoreError) as exc:
        return server.requests, exc
    return server.requests, None


def expected_models(behaviour_: Behaviour, first: str = PRIMARY) -> list[str]:
    """The models the server should see: each target ``attempts`` times (a reroute gets a fresh budget)."""
    assert behaviour_.attempts is not None
    return [target for target in (first, *behaviour_.reroutes) for _ in range(behaviour_.attempts)]


# -- the example, and the settings that change it ----------------------------------------

def test_explain_on_demand_throughput_says_it_resends_to_the_inference_profile(server, fake_time, monkeypatch):
    """Regression: explain said "fails at once, never retried" although the call is re-sent to the profile."""
    said = claim(ON_DEMAND, {}, monkeypatch)
    text = "\n".join(said.steps)
    assert "fails at once" not in text
    assert f"re-sent once, at once, to the inference profile us.{PRIMARY}" in text
    assert said.reroutes == (f"us.{PRIMARY}",)
    requests, error = observe(server, fake_time, Reply.error(400, "ValidationException", ON_DEMAND))
    assert [r.model_id for r in requests] == expected_models(said) == [PRIMARY, f"us.{PRIMARY}"]
    assert error is not None and "[bedrock-hooks] InferenceProfileRequired" in str(error)


def test_explain_on_demand_with_profiles_off(server, fake_time, monkeypatch):
    said = claim(ON_DEMAND, {"BEDROCK_HOOKS_INFERENCE_PROFILES": "off"}, monkeypatch)
    assert said.reroutes == () and said.attempts == 1
    assert any("BEDROCK_HOOKS_INFERENCE_PROFILES=off" in step for step in said.steps)
    requests, _ = observe(server, fake_time, Reply.error(400, "ValidationException", ON_DEMAND))
    assert [r.model_id for r in requests] == expected_models(said) == [PRIMARY]


def test_explain_on_demand_with_a_fallback_chain(server, fake_time, monkeypatch):
    said = claim(ON_DEMAND, {"BEDROCK_HOOKS_FALLBACKS": f"{PRIMARY}={SECOND}"}, monkeypatch)
    requests, _ = observe(server, fake_time, Reply.error(400, "ValidationException", ON_DEMAND))
    assert [r.model_id for r in requests] == expected_models(said) == [PRIMARY, f"us.{PRIMARY}", SECOND,
                                                                        f"us.{SECOND}"]


# -- retried errors: attempts, sleeps, fallbacks, botocore's own handler ---------------------------

@pytest.mark.parametrize(("text", "env", "reply", "sends"), [
    ("ThrottlingException", {"BEDROCK_HOOKS_MAX_ATTEMPTS": "3"}, Reply.throttling(), 3),
    ("ThrottlingException", {"BEDROCK_HOOKS_MAX_ATTEMPTS": "2", "BEDROCK_HOOKS_FALLBACKS": f"{PRIMARY}={SECOND}"},
     Reply.throttling(), 4),
    ("503", {}, Reply.service_unavailable(), 3),  # botocore standard mode's 3: an outage costs no more requests
    ("ModelTimeoutException", {"BEDROCK_HOOKS_MAX_ATTEMPTS": "6"}, Reply.model_timeout(), 3),
    (DAILY, {}, Reply.throttling(DAILY), 1),
    (DAILY, {"BEDROCK_HOOKS_FALLBACKS": f"{PRIMARY}={SECOND}"}, Reply.throttling(DAILY), 2),
    ("ConnectionClosedError", {"BEDROCK_HOOKS_MAX_ATTEMPTS": "3"}, Reply.reset(), 3),
], ids=["throttle-3", "throttle-then-fallback", "503-defaults", "entry-cap", "daily-quota", "daily-quota-fallback",
        "reset"])
def test_explain_counts_the_requests_the_library_sends(text, env, reply, sends, server, fake_time, monkeypatch):
    said = claim(text, env, monkeypatch, model=PRIMARY, operation="Converse")
    requests, error = observe(server, fake_time, reply)
    assert [r.model_id for r in requests] == expected_models(said)
    assert len(requests) == sends
    assert error is not None
    sleeps = [d for d in said.delays if d > 0]  # a retry "at once" does not sleep
    assert len(fake_time.sleeps) == len(sleeps) * (1 + len(said.reroutes))  # a reroute starts a fresh budget
    for slept, longest in zip(fake_time.sleeps, sleeps * (1 + len(said.reroutes))):
        assert 0 < slept <= longest


def test_explain_with_retry_off_defers_to_botocore(server, fake_time, monkeypatch):
    said = claim("ThrottlingException", {"BEDROCK_HOOKS_RETRY": "off"}, monkeypatch)
    assert said.handled_by == "botocore" and said.attempts is None and said.reroutes == ()
    assert any("BEDROCK_HOOKS_RETRY=off" in step for step in said.steps)
    hooked, error = observe(server, fake_time, Reply.throttling())
    server.reset()
    server.default = Reply.throttling()
    with pytest.raises(ClientError):
        converse(make_client(new_session(), server))  # plain botocore, same Config
    assert len(hooked) == len(server.requests)
    assert "[bedrock-hooks] ThrottlingException" in str(error)  # hints stay on


def test_explain_region_failover(server, fake_time, monkeypatch):
    env = {"BEDROCK_HOOKS_FALLBACK_REGIONS": f"us-west-2={server.url}", "BEDROCK_HOOKS_MAX_ATTEMPTS": "2"}
    said = claim("ServiceUnavailableException", env, monkeypatch, model=PRIMARY)
    assert said.reroutes == ("us-west-2",)
    requests, _ = observe(server, fake_time, Reply.service_unavailable())
    assert [sigv4_scope(r)["region"] for r in requests] == [REGION] * 2 + ["us-west-2"] * 2


# -- what the final error carries: hints and stated waits -------------------------------------------

@pytest.mark.parametrize(("message", "status", "code", "wait"), [
    (FTU, 404, "ResourceNotFoundException", 900.0),
    (BEING_PROCESSED, 403, "AccessDeniedException", 300.0),
])
def test_explain_states_the_retry_after_the_error_carries(message, status, code, wait, server, fake_time,
                                                          monkeypatch):
    said = claim(message, {}, monkeypatch, status=status, code=code)
    assert said.retry_after == wait and said.attempts == 1
    assert any(f"retry_after'] is {wait:g} s (stated in the message)" in step for step in said.steps)
    requests, error = observe(server, fake_time, Reply.error(status, code, message))
    assert len(requests) == 1 and error is not None
    assert error.response["BedrockHooks"]["retry_after"] == said.retry_after


def test_explain_with_hints_off(server, fake_time, monkeypatch):
    said = claim(FTU, {"BEDROCK_HOOKS_HINTS": "off"}, monkeypatch)
    assert said.hint is False
    assert any("BEDROCK_HOOKS_HINTS=off" in step for step in said.steps)
    assert not any("retry_after" in step for step in said.steps)  # nothing carries it without hints
    _, error = observe(server, fake_time, Reply.error(404, "ResourceNotFoundException", FTU))
    assert error is not None and "[bedrock-hooks]" not in str(error) and "BedrockHooks" not in error.response


def test_explain_prints_the_hint_line_the_error_will_end_with(server, fake_time, monkeypatch):
    said = claim(DAILY, {}, monkeypatch, status=429, code="ThrottlingException")
    _, error = observe(server, fake_time, Reply.throttling(DAILY))
    line = str(error).splitlines()[-1]
    assert line.startswith("[bedrock-hooks] DailyTokenQuotaExceeded")
    assert any(line in step for step in said.steps)


# -- streams ----------------------------------------------------------------------------------------

def test_explain_mid_stream_error_with_retry_off_says_never_reissued(monkeypatch):
    said = claim("throttlingException", {"BEDROCK_HOOKS_RETRY": "off"}, monkeypatch, operation="ConverseStream")
    assert said.stream_reissue is False
    assert any("BEDROCK_HOOKS_RETRY=off" in step for step in said.steps)


@pytest.mark.parametrize("stream_retry", ["on", "off"])
def test_explain_mid_stream_error(stream_retry, server, fake_time, monkeypatch):
    said = claim("throttlingException", {"BEDROCK_HOOKS_STREAM_RETRY": stream_retry}, monkeypatch,
                 operation="ConverseStream")
    assert said.stream_reissue is (stream_retry == "on")
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    server.script(Reply.stream([EventFrame.exception("throttlingException", THROTTLED)]),
                  Reply.stream(EventFrame.converse_text(["fine"])))
    response = client.converse_stream(modelId=PRIMARY, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    if said.stream_reissue:
        assert [e for e in response["stream"] if "contentBlockDelta" in e]
        assert len(server.requests) == 2
    else:
        with pytest.raises(EventStreamError):
            list(response["stream"])
        assert len(server.requests) == 1


# -- settings that switch the library off for the error ------------------------------------------------

def test_explain_when_switched_off(monkeypatch):
    said = claim("ThrottlingException", {"BEDROCK_HOOKS_ENABLED": "0"}, monkeypatch)
    assert said.handled_by == "botocore" and said.attempts is None
    assert "BEDROCK_HOOKS_ENABLED" in said.steps[0]


def test_explain_for_a_mutating_operation_after_an_ambiguous_failure(monkeypatch):
    said = claim("ConnectionClosedError", {}, monkeypatch, operation="DeleteCustomModel")
    assert said.attempts == 1
    assert any("DeleteCustomModel changes resources" in step for step in said.steps)


def test_explain_clock_skew_remedy_follows_its_switch(monkeypatch):
    on = claim("RequestExpired", {}, monkeypatch)
    assert on.attempts == 2 and any("corrects this client's signing clock" in s for s in on.steps)
    off = claim("RequestExpired", {"BEDROCK_HOOKS_FIX_CLOCK_SKEW": "off"}, monkeypatch)
    assert off.attempts == 1 and any("BEDROCK_HOOKS_FIX_CLOCK_SKEW=off" in s for s in off.steps)


def test_explain_command_reads_the_environment():
    """The command, as a user runs it: a botocore line, settings from the environment, the Region too."""
    env = {"PYTHONPATH": str(REPO), "AWS_DEFAULT_REGION": "eu-west-1", "BEDROCK_HOOKS_MAX_ATTEMPTS": "2",
           "PATH": "/usr/bin:/bin"}
    line = f"An error occurred (ValidationException) when calling the Converse operation: {ON_DEMAND}"
    proc = subprocess.run([sys.executable, "-m", "bedrock_hooks", "explain", line], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "fails at once" not in proc.stdout
    assert f"to the inference profile eu.{PRIMARY}" in proc.stdout
    assert "(operation Converse, model " in proc.stdout and "Region eu-west-1" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "bedrock_hooks", "explain", "ThrottlingException"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert "sent at most 2 times in all (BEDROCK_HOOKS_MAX_ATTEMPTS=2, set by" in proc.stdout
