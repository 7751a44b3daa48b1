"""install()/uninstall(): scope, idempotence, restoration, and configuration that never raises."""

from __future__ import annotations

import logging

import boto3
import botocore.session
import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks.installation import Kind, is_patched
from bedrock_hooks.config import load_settings
from bedrock_hooks.retry import botocore_retry_handler
from bedrock_hooks.testing import Reply
from conftest import CREDS, converse, make_client, new_session


def handler_ids(client) -> set[str]:
    emitter = client.meta.events._emitter
    return {k for k in emitter._unique_id_handlers if k.startswith("bedrock-hooks") or k.startswith("retry-config")}


def needs_retry_handlers(client) -> list:
    return list(client.meta.events._emitter._handlers.prefix_search("needs-retry.bedrock-runtime.Converse"))


def test_non_bedrock_clients_of_the_same_session_are_untouched(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    sts = make_client(session, server, service="sts")
    assert not any(k.startswith("bedrock-hooks") for k in sts.meta.events._emitter._unique_id_handlers)
    handler = botocore_retry_handler(sts.meta.events, "sts")
    assert handler is not None and "bedrock_hooks" not in getattr(handler, "__module__", "")
    bedrock = make_client(session, server)
    assert "bedrock-hooks-hint-bedrock-runtime" in handler_ids(bedrock)


def test_installing_twice_changes_nothing(server, fake_time):
    session = new_session()
    first = bedrock_hooks.install(session, runtime=fake_time.runtime())
    second = bedrock_hooks.install(session, max_attempts=2)
    assert first is second
    client = make_client(session, server)
    assert bedrock_hooks.install(client) is first
    before = needs_retry_handlers(client)
    bedrock_hooks.install(client)
    bedrock_hooks.install(session._session)  # the botocore session behind the boto3 one
    assert needs_retry_handlers(client) == before
    server.script(Reply.throttling(), Reply.throttling())
    converse(client)
    assert len(fake_time.sleeps) == 2  # one decision per attempt, not two


def test_uninstall_restores_plain_botocore(server, fake_time):
    session = new_session()
    plain = make_client(session, server)
    plain_handlers = needs_retry_handlers(plain)
    installation = bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    assert is_patched()
    installation.uninstall()
    assert not is_patched()
    assert handler_ids(client) == {"retry-config-bedrock-runtime"}
    assert [type(getattr(h, "__self__", h)).__name__ for h in needs_retry_handlers(client)] == \
        [type(getattr(h, "__self__", h)).__name__ for h in plain_handlers]
    server.default = Reply.throttling("Too many tokens per day, please wait before trying again.")
    with pytest.raises(ClientError) as raised:
        converse(client)
    assert "[bedrock-hooks]" not in str(raised.value)
    assert len(server.requests) == 3  # botocore standard mode decides again
    assert fake_time.sleeps == []
    installation.uninstall()  # idempotent


def test_install_on_an_existing_client_and_default_session(server, fake_time, monkeypatch):
    session = new_session()
    client = make_client(session, server)  # created before any install
    installation = bedrock_hooks.install(client, runtime=fake_time.runtime())
    assert installation.kind == "client" and installation.clients == [client]
    server.script(Reply.service_unavailable())
    converse(client)
    assert len(fake_time.sleeps) == 1
    bedrock_hooks.uninstall(client)
    assert handler_ids(client) == {"retry-config-bedrock-runtime"}

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    boto3.setup_default_session(region_name="us-east-1", **CREDS)
    default = bedrock_hooks.install(boto3.DEFAULT_SESSION)
    assert default.kind == "session" and default.target is boto3.DEFAULT_SESSION._session
    client = boto3.client("bedrock-runtime", endpoint_url=server.url)
    assert default.clients == [client]


def test_install_without_a_target_covers_every_session(server, fake_time):
    everywhere = bedrock_hooks.install(runtime=fake_time.runtime())
    assert everywhere.kind == "global" and everywhere.target is None and is_patched()
    assert bedrock_hooks.install() is everywhere and bedrock_hooks.install_global() is everywhere
    assert bedrock_hooks.installation_for(None) is everywhere
    clients = [make_client(new_session(), server), make_client(new_session(), server)]
    assert everywhere.clients and set(everywhere.clients) == set(clients)
    bedrock_hooks.uninstall()
    assert not everywhere.active and not is_patched()
    assert all(handler_ids(c) == {"retry-config-bedrock-runtime"} for c in clients)


def test_botocore_session_and_services_setting(server, fake_time):
    session = botocore.session.get_session()
    session.set_credentials(CREDS["aws_access_key_id"], CREDS["aws_secret_access_key"])
    bedrock_hooks.install(session, runtime=fake_time.runtime(), services="bedrock-runtime,bedrock-agent-runtime")
    runtime = session.create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=server.url)
    control = session.create_client("bedrock", region_name="us-east-1", endpoint_url=server.url)
    agent = session.create_client("bedrock-agent-runtime", region_name="us-east-1", endpoint_url=server.url)
    assert "bedrock-hooks-retry-bedrock-runtime" in handler_ids(runtime)
    assert "retry-config-bedrock-runtime" not in handler_ids(runtime)  # botocore's handler taken out of the way
    assert not any(k.startswith("bedrock-hooks") for k in handler_ids(control))
    assert any(k.startswith("bedrock-hooks") for k in handler_ids(agent))


def test_disabled_installs_nothing(monkeypatch, server):
    monkeypatch.setenv("BEDROCK_HOOKS_ENABLED", "0")
    session = new_session()
    installation = bedrock_hooks.install(session)
    assert installation.kind == "disabled" and not installation.active
    assert not is_patched()
    client = make_client(session, server)
    assert handler_ids(client) == {"retry-config-bedrock-runtime"}


@pytest.mark.parametrize("variable,value,used", [
    ("BEDROCK_HOOKS_MAX_ATTEMPTS", "lots", "5"),
    ("BEDROCK_HOOKS_MAX_ATTEMPTS", "0", "5"),
    ("BEDROCK_HOOKS_BACKOFF_BASE", "-1", "0.5"),
    ("BEDROCK_HOOKS_RETRY_DEADLINE", "nan", "60.0"),
    ("BEDROCK_HOOKS_RETRY", "perhaps", "True"),
    ("BEDROCK_HOOKS_LOG_LEVEL", "LOUD", "WARNING"),
    ("BEDROCK_HOOKS_SERVICES", "s3,dynamodb", "bedrock,bedrock-runtime"),
])
def test_bad_environment_values_warn_once_and_use_the_default(variable, value, used, caplog):
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    env = {variable: value}
    settings = load_settings(env)
    load_settings(env)
    messages = [r.getMessage() for r in caplog.records if variable in r.getMessage()]
    assert len(messages) == 1
    assert repr(value) in messages[0] and f"using {used}" in messages[0]
    name = next(o.name for o in bedrock_hooks.OPTIONS if o.env == variable)
    assert str(getattr(settings, name)) == used or ",".join(getattr(settings, name)) == used
    assert settings.rejected == ((variable, value, used),)


def test_unknown_service_names_are_dropped_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    settings = load_settings({"BEDROCK_HOOKS_SERVICES": "bedrock-runtime, bedrok"})
    assert settings.services == ("bedrock-runtime",)
    assert any("BEDROCK_HOOKS_SERVICES" in r.getMessage() and "bedrok" in r.getMessage() for r in caplog.records)


def test_overrides_beat_environment_beats_defaults():
    settings = load_settings({"BEDROCK_HOOKS_MAX_ATTEMPTS": "7", "BEDROCK_HOOKS_HINTS": "off"}, max_attempts=2)
    assert settings.max_attempts == 2 and settings.sources["max_attempts"] == "override"
    assert settings.hints is False and settings.sources["hints"] == "BEDROCK_HOOKS_HINTS"
    assert settings.backoff_cap == 20.0 and settings.sources["backoff_cap"] == "default"


def test_unknown_override_warns_instead_of_raising(caplog):
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    installation = bedrock_hooks.install(new_session(), max_attemps=3)
    assert installation.active
    assert any("max_attemps" in r.getMessage() for r in caplog.records)


def test_kind_is_an_enum_that_still_compares_as_text(server):
    session = new_session()
    installation = bedrock_hooks.install(session)
    assert installation.kind is Kind.SESSION and installation.kind == "session"
    assert bedrock_hooks.install(make_client(new_session(), server)).kind is Kind.CLIENT
    assert bedrock_hooks.install().kind is Kind.GLOBAL
    assert {k.value for k in Kind} == {"global", "session", "client", "disabled"}
