"""Async clients are refused until async support lands (issue 11, defect 3), with REAL aiobotocore.

Our handlers are synchronous and back off with ``time.sleep``: on an aiobotocore client they would
block the event loop and break ``async for`` over streams. ``install()`` on an aiobotocore client,
an ``AioSession`` or an aioboto3 session must therefore say so once, return an inactive
``Installation`` and attach nothing; ``install()`` for every session (and the launcher) must name
what it skips instead of silently leaving aio clients plain.

aiobotocore pins botocore, so these tests run in their own environment (group ``aio``:
``pip install aiobotocore boto3 pytest hypothesis``; group ``aioboto3``: ``pip install aioboto3``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bedrock_hooks
from bedrock_hooks import installation
from bedrock_hooks.testing import Reply
from conftest import CREDS, make_client, new_session
from tests._requires import require

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = Path(bedrock_hooks.__file__).resolve().parent / "bootstrap"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(installation, "_once", set())  # each warning is once per process


@pytest.fixture
def aiobotocore():
    return require("aiobotocore.session", group="aio")


def our_ids(client) -> list[str]:
    emitter = client.meta.events
    while hasattr(emitter, "_emitter"):
        emitter = emitter._emitter
    return [k for k in emitter._unique_id_handlers if k.startswith("bedrock-hooks")]


def warnings_about(caplog, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and word in r.getMessage()]


async def _aio_call(session, server, install=None):
    """Create an aio client, optionally install on it, call once through a 503: aiobotocore's retry."""
    async with session.create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=server.url,
                                     **CREDS) as client:
        installation = bedrock_hooks.install(client) if install == "client" else None
        server.script(Reply.service_unavailable())
        reply = await client.converse(modelId=MODEL, messages=MESSAGES)
        return installation, our_ids(client), reply


def test_install_on_an_aiobotocore_client_is_refused_once_and_attaches_nothing(aiobotocore, server, caplog):
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    session = aiobotocore.get_session()
    installation, ids, reply = asyncio.run(_aio_call(session, server, install="client"))
    assert installation.kind == "refused" and not installation.active and installation.clients == []
    assert "async" in installation.reason
    assert ids == [] and "BedrockHooks" not in reply  # plain aiobotocore: its own retry served the 503
    assert len(server.requests) == 2
    asyncio.run(_aio_call(session, server, install="client"))
    assert len(warnings_about(caplog, "aiobotocore")) == 1


def test_install_on_an_aio_session_is_refused_and_its_clients_stay_plain(aiobotocore, server, caplog):
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    session = aiobotocore.get_session()
    installation = bedrock_hooks.install(session)
    assert installation.kind == "refused" and not installation.active
    assert bedrock_hooks.installation_for(session) is None
    _, ids, _ = asyncio.run(_aio_call(session, server))
    assert ids == []
    assert len(warnings_about(caplog, "aiobotocore")) == 1
    assert bedrock_hooks.install(session).kind == "refused"
    assert len(warnings_about(caplog, "aiobotocore")) == 1


def test_install_on_an_aioboto3_session_is_refused(server, caplog):
    aioboto3 = require("aioboto3", group="aioboto3")
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    session = aioboto3.Session(region_name="us-east-1", **CREDS)
    installation = bedrock_hooks.install(session)
    assert installation.kind == "refused" and not installation.active

    async def call():
        async with session.client("bedrock-runtime", endpoint_url=server.url) as client:
            server.script(Reply.service_unavailable())
            await client.converse(modelId=MODEL, messages=MESSAGES)
            return our_ids(client)

    assert asyncio.run(call()) == []
    assert len(server.requests) == 2
    assert len(warnings_about(caplog, "aioboto3")) == 1


def test_install_everywhere_names_the_aio_sessions_it_skips(aiobotocore, server, caplog, fake_time):
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    everywhere = bedrock_hooks.install(runtime=fake_time.runtime())
    assert everywhere.active
    _, ids, _ = asyncio.run(_aio_call(aiobotocore.get_session(), server))
    assert ids == []
    sync = make_client(new_session(), server)  # sync clients of the same process are covered
    assert our_ids(sync)
    skipped = warnings_about(caplog, "aiobotocore")
    assert len(skipped) == 1 and "skips" in skipped[0]


APP = textwrap.dedent(
    """
    import asyncio, os
    import aiobotocore.session

    async def main():
        session = aiobotocore.session.get_session()
        async with session.create_client("bedrock-runtime", endpoint_url=os.environ["APP_ENDPOINT"]) as client:
            await client.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}])
            emitter = client.meta.events
            while hasattr(emitter, "_emitter"):
                emitter = emitter._emitter
            print("OURS", sorted(k for k in emitter._unique_id_handlers if k.startswith("bedrock-hooks")))

    asyncio.run(main())
    """
)


def test_the_launcher_names_the_aio_sessions_it_skips(aiobotocore, server):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEDROCK_HOOKS_", "AWS_", "PYTHON"))}
    env.update(PYTHONPATH=os.pathsep.join([str(BOOTSTRAP), str(REPO)]), APP_ENDPOINT=server.url,
               AWS_ACCESS_KEY_ID=CREDS["aws_access_key_id"], AWS_SECRET_ACCESS_KEY=CREDS["aws_secret_access_key"],
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    done = subprocess.run([sys.executable, "-c", APP], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "OURS []" in done.stdout
    lines = [line for line in done.stderr.splitlines() if "aiobotocore" in line and "bedrock-hooks" in line]
    assert len(lines) == 1, done.stderr
