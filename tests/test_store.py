"""The state store without Redis: the in-process tables (LRU, bounded), the option, the key format.

The regression of issue 14: the remembered-profile and circuit tables evicted first-in-first-out at
512 scopes, so with more models in rotation a profile in constant use was forgotten and every call
for it paid a wasted 400 again. The first test fails on the FIFO tables.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

import bedrock_hooks
from bedrock_hooks import circuit, store
from bedrock_hooks.config import load_settings
from bedrock_hooks.quota_scope import QuotaScope, account_of, fleet_identity
from bedrock_hooks.testing import Reply
from conftest import CREDS, converse, make_client, new_session
from _shared_state import fresh_shared_state  # noqa: F401  (autouse)

ON_DEMAND = "Invocation of model ID {} with on-demand throughput isn\u2019t supported. Retry your request with the ID " \
            "or ARN of an inference profile that contains this model."


def model(i: int) -> str:
    return f"anthropic.claude-rotation-{i}-v1:0"


def needs_profile(request):
    """Every foundation model answers 'on-demand throughput isn't supported'; its us. profile serves."""
    if request.model_id.startswith("us."):
        return None
    return Reply.error(400, "ValidationException", ON_DEMAND.format(request.model_id))


def test_profiles_in_use_survive_a_rotation_of_600_other_models(server, fake_time):
    """10 models used all the time, 600 others once each: LRU keeps the 10 learned, FIFO forgot them."""
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    server.handler = needs_profile
    busy = [model(i) for i in range(10)]
    for name in busy:
        converse(client, name)  # learns each busy model's profile: one 400 each
    server.reset()
    server.handler = needs_profile
    for i in range(600):
        converse(client, model(100 + i))  # a one-off model: one 400, one success
        if i % 50 == 49:
            for name in busy:
                converse(client, name)
    wasted = [r.model_id for r in server.requests if r.model_id in busy]
    assert wasted == [], f"{len(wasted)} calls of models in use paid the 400 again"
    assert sum(1 for r in server.requests if not r.model_id.startswith("us.")) == 600  # the control: one each


def test_memory_tables_are_bounded_and_evict_the_least_recently_used():
    memory = store.MemoryStore(capacity=3)
    scopes = [QuotaScope("a", "us-east-1", f"model:m{i}", "https://x") for i in range(5)]
    for scope in scopes[:3]:
        memory.put_text("profile", scope, scope.target, 0.0, 100.0)
    assert memory.get_text("profile", scopes[0], 1.0, 100.0) == "model:m0"  # used: now the most recent
    memory.put_text("profile", scopes[3], "model:m3", 1.0, 100.0)
    assert memory.size("profile") == 3
    assert memory.get_text("profile", scopes[1], 1.0, 100.0) is None  # the least recently used went
    assert memory.get_text("profile", scopes[0], 1.0, 100.0) == "model:m0"
    assert memory.get_text("profile", scopes[0], 200.0, 100.0) is None  # expired by its TTL


def test_circuit_operation_opens_on_the_threshold_within_the_window():
    memory = store.MemoryStore()
    scope = QuotaScope("a", "us-east-1", "model:m", "https://x")

    def error(now: float) -> tuple[float, ...]:
        return memory.apply(circuit.PRESSURE, circuit.FAMILY, scope, now, (3.0, 10.0, 30.0), 40.0)

    assert [error(t)[0] for t in (0.0, 1.0, 20.0, 21.0)] == [0.0, 0.0, 0.0, 0.0]  # never 3 within 10 s
    assert error(22.0) == (1.0, 52.0)  # 20, 21, 22: opens until 22 + 30
    assert memory.apply(circuit.STATUS, circuit.FAMILY, scope, 23.0, (), 40.0) == (52.0,)
    assert [error(t)[0] for t in (23.0, 24.0, 25.0)] == [0.0, 0.0, 0.0]  # already open
    assert error(53.0)[0] == 0.0  # closed at 52; the errors seen while open (24, 25) are out of the window
    assert [error(t)[0] for t in (54.0, 55.0)] == [0.0, 1.0]


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """A secret option's rejected values all show as <hidden>: one warning per variable and process."""
    from bedrock_hooks import config

    monkeypatch.setattr(config, "_warned", set())


def test_state_url_option_warns_once_and_never_shows_the_password(caplog):
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    assert load_settings({}).state_url == "memory://"
    url = "redis://:s3cret-pass@127.0.0.1:6379/0"
    import importlib.util  # where redis-py is missing (the oldest CI env) a valid URL is memory:// too

    valid = url if importlib.util.find_spec("redis") is not None else "memory://"
    assert load_settings({"BEDROCK_HOOKS_STATE_URL": url}).state_url == valid
    for bad in ("http://:s3cret-pass@host/0", "redis://:s3cret-pass@/0", "redis://:s3cret-pass@h:99999/0",
                "redis://:s3cret-pass@h/zero"):
        assert load_settings({"BEDROCK_HOOKS_STATE_URL": bad}).state_url == "memory://"
    shown = " ".join(r.getMessage() for r in caplog.records)
    assert "BEDROCK_HOOKS_STATE_URL" in shown and "using memory://" in shown
    assert "s3cret" not in shown
    assert store.redacted(url) == "redis://127.0.0.1:6379/0"


def test_a_redis_url_without_redis_py_is_one_warning_and_memory(monkeypatch, caplog):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "redis" else real(name, *a))
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    settings = load_settings({"BEDROCK_HOOKS_STATE_URL": "redis://127.0.0.1:1/0"})
    assert settings.state_url == "memory://"
    assert [r for r in caplog.records if "redis-py" in r.getMessage() and "BEDROCK_HOOKS_STATE_URL" in r.getMessage()]


def _signer(access_key: str, account_id: str | None = None):
    from botocore.credentials import Credentials

    credentials = Credentials(access_key, "secret", account_id=account_id) if account_id else \
        Credentials(access_key, "secret")
    return type("Signer", (), {"_credentials": credentials})()


KEY_SCRIPT = """
import sys
from bedrock_hooks import store
from bedrock_hooks.quota_scope import QuotaScope, account_of
from botocore.credentials import Credentials
signer = type("Signer", (), {"_credentials": Credentials(sys.argv[1], "secret")})()
scope = QuotaScope(account_of(signer), "us-east-1", "model:m", "https://x")
print(store.RedisStore("redis://127.0.0.1:1/0", salt=sys.argv[2]).key("rate", scope))
"""


def test_redis_keys_are_the_same_in_every_process_and_never_hold_the_access_key():
    access_key = CREDS["aws_access_key_id"]
    scope = QuotaScope(account_of(_signer(access_key)), "us-east-1", "model:m", "https://x")
    key = store.RedisStore("redis://127.0.0.1:1/0", salt="fleet-secret").key("rate", scope)
    assert key.startswith("bedrock-hooks:{") and key.endswith("}:rate")  # a Redis Cluster hash tag
    assert access_key not in key and access_key[4:] not in key and scope.account not in key
    other_process = subprocess.run([sys.executable, "-c", KEY_SCRIPT, access_key, "fleet-secret"],
                                   capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert other_process == key  # the per-process account hash differs, the fleet key does not
    other_salt = subprocess.run([sys.executable, "-c", KEY_SCRIPT, access_key, "another-salt"],
                                capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert other_salt != key
    other_account = QuotaScope(account_of(_signer("AKIDANOTHERACCOUNT00")), "us-east-1", "model:m", "https://x")
    assert store.RedisStore("redis://127.0.0.1:1/0", salt="fleet-secret").key("rate", other_account) != key


def test_identities_only_this_process_knows_stay_in_the_process():
    assert fleet_identity("signer-7f00") is None and fleet_identity("unresolved-7f00") is None
    assert fleet_identity("unsigned") == "unsigned"
    redis_store = store.RedisStore("redis://127.0.0.1:1/0")
    assert redis_store.key("rate", QuotaScope("signer-7f00", "us-east-1", "model:m", "https://x")) is None


@pytest.mark.parametrize("url", ["memory://", ""])
def test_memory_is_one_process_wide_store(url):
    assert store.store_for(load_settings({}, state_url=url or "memory://")) is store.store_for(load_settings({}))
