"""``install()`` with no argument reaches every client the process makes (issue 12, section 3).

Frameworks build their own sessions: langchain-aws and strands-agents call ``boto3.Session(...)``
and then ``.client("bedrock-runtime", ...)``, others use botocore directly, and some create their
session on a worker thread. One test per style, each against the loopback server, proving the
hooks decide: throttling is retried with *our* backoff (slept through the injected runtime) and a
daily token quota fails at once with the hint.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import boto3
import botocore.session
import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks.testing import Reply
from conftest import CREDS, converse

DAILY = "Too many tokens per day, please wait before trying again."


@pytest.fixture(autouse=True)
def _credentials_from_the_environment(monkeypatch, tmp_path):
    """How a framework finds credentials: the environment, never a real profile."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def boto3_session_client(url: str):
    return boto3.Session().client("bedrock-runtime", endpoint_url=url)


def boto3_session_with_region(url: str):
    return boto3.Session(region_name="us-west-2").client("bedrock-runtime", endpoint_url=url)


def boto3_default_session(url: str):
    return boto3.client("bedrock-runtime", endpoint_url=url)


def botocore_get_session(url: str):
    return botocore.session.get_session().create_client("bedrock-runtime", endpoint_url=url)


def session_made_on_another_thread(url: str):
    made: list = []
    worker = threading.Thread(target=lambda: made.append(boto3.Session().client("bedrock-runtime", endpoint_url=url)))
    worker.start()
    worker.join(30)
    return made[0]


STYLES: dict[str, Callable[[str], object]] = {
    "boto3.Session().client": boto3_session_client,
    "boto3.Session(region_name=...)": boto3_session_with_region,
    "boto3.client (default session)": boto3_default_session,
    "botocore get_session().create_client": botocore_get_session,
    "session created on another thread": session_made_on_another_thread,
}


def assert_hooks_decide(client, server, fake_time) -> None:
    server.script(Reply.throttling(), Reply.throttling())
    converse(client)
    assert len(server.requests) == 3 and len(fake_time.sleeps) == 2  # retried, with our backoff
    server.reset()
    server.script(Reply.throttling(DAILY))
    with pytest.raises(ClientError) as raised:
        converse(client)
    assert len(server.requests) == 1  # never retried: botocore would have tried 3 times
    assert raised.value.response["BedrockHooks"]["entry"] == "DailyTokenQuotaExceeded"


@pytest.mark.parametrize("style", list(STYLES))
def test_install_without_a_target_covers_each_way_of_making_a_client(style, server, fake_time):
    bedrock_hooks.install(runtime=fake_time.runtime())
    client = STYLES[style](server.url)
    assert_hooks_decide(client, server, fake_time)


def test_a_session_made_on_another_thread_is_also_called_from_there(server, fake_time):
    bedrock_hooks.install(runtime=fake_time.runtime())
    errors: list[BaseException] = []

    def work() -> None:
        try:
            assert_hooks_decide(boto3.Session().client("bedrock-runtime", endpoint_url=server.url), server, fake_time)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(60)
    assert not worker.is_alive() and not errors, errors


def test_narrower_installs_keep_their_meaning_next_to_install_everywhere(server, fake_time):
    everywhere = bedrock_hooks.install(runtime=fake_time.runtime())
    session = boto3.Session()
    mine = bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=2)
    assert mine is not everywhere and mine.kind == "session"
    client = session.client("bedrock-runtime", endpoint_url=server.url)
    assert bedrock_hooks.installation_for(client) is mine  # the session's own settings win
    other = boto3.Session().client("bedrock-runtime", endpoint_url=server.url)
    assert bedrock_hooks.installation_for(other) is everywhere
    mine.uninstall()
    assert everywhere.active and bedrock_hooks.installation_for(other) is everywhere
