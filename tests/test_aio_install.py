"""install() covers aiobotocore / aioboto3 sessions and clients, with REAL aiobotocore (issue 13).

``install(aio_client)``, ``install(aio_session)``, ``install(aioboto3.Session())``, ``install()`` (every
session, aiobotocore's included: ``AioSession._create_client`` is patched, at once or when aiobotocore
is imported later) and the zero-code launcher put the same handlers on async clients as on sync ones;
``uninstall`` restores plain aiobotocore, its own retry handler included. Without aiobotocore imported
nothing async is imported by the library.

Groups: ``aio`` (aiobotocore), ``aioboto3`` (aioboto3, which pins an older aiobotocore).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks import patches
from bedrock_hooks.installation import attached_features
from bedrock_hooks.keepalive import ConnectionHygiene
from bedrock_hooks.keepalive_aio import AioConnectionHygiene
from bedrock_hooks.retry_slot import botocore_retry_handler
from bedrock_hooks.testing import Reply
from _aio import MESSAGES, MODEL, aconverse, aio_botocore_time, aio_client, aiobotocore_session, our_ids  # noqa: F401
from _requires import require
from conftest import CREDS, converse, make_client, new_session

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = Path(bedrock_hooks.__file__).resolve().parent / "bootstrap"
DAILY = Reply.throttling("Too many tokens per day, please wait before trying again.")  # fail fast; botocore retries


async def _daily_quota(client, server) -> tuple[ClientError, list[str]]:
    """One call answered with a daily-quota 429: hooked, it fails at once with the hint; plain, it is retried."""
    server.reset()
    server.script(DAILY, DAILY, DAILY)
    with pytest.raises(ClientError) as raised:
        await aconverse(client)
    return raised.value, our_ids(client)


def _hooked(error: ClientError, server) -> bool:
    return "BedrockHooks" in error.response and len(server.requests) == 1


def test_install_on_an_aiobotocore_client_hooks_it_and_uninstall_restores_plain_aiobotocore(server, fake_time):
    async def scenario():
        session = aiobotocore_session()
        async with aio_client(session, server) as client:
            retry_handler = botocore_retry_handler(client.meta.events, "bedrock-runtime")
            inst = bedrock_hooks.install(client, runtime=fake_time.runtime())
            assert inst.kind == "client" and inst.active and inst.clients == [client]
            assert bedrock_hooks.install(client) is inst
            error, ids = await _daily_quota(client, server)
            assert _hooked(error, server) and ids
            assert error.response["BedrockHooks"]["entry"] == "DailyTokenQuotaExceeded"
            bedrock_hooks.uninstall(client)
            assert our_ids(client) == [] and attached_features(client) == []
            assert botocore_retry_handler(client.meta.events, "bedrock-runtime") == retry_handler
            error, _ = await _daily_quota(client, server)
            assert "BedrockHooks" not in error.response and len(server.requests) == 3  # aiobotocore's retries

    asyncio.run(scenario())


def test_install_on_an_aio_session_covers_the_clients_it_creates(server, fake_time):
    async def scenario():
        session = aiobotocore_session()
        inst = bedrock_hooks.install(session, runtime=fake_time.runtime())
        assert inst.kind == "session" and inst.active
        assert bedrock_hooks.install(session) is inst and bedrock_hooks.installation_for(session) is inst
        assert patches.AIO_CREATE_CLIENT.held_by(inst)
        async with aio_client(session, server) as client:
            assert client in inst.clients
            error, _ = await _daily_quota(client, server)
            assert _hooked(error, server)
        async with aio_client(aiobotocore_session(), server) as other:  # another session: plain
            assert our_ids(other) == []
        inst.uninstall()
        assert not patches.AIO_CREATE_CLIENT.engaged
        assert patches.AIO_CREATE_CLIENT.state() is patches.State.OFF
        async with aio_client(session, server) as client:
            assert our_ids(client) == []

    asyncio.run(scenario())


def test_install_on_an_aioboto3_session_covers_its_clients(server, fake_time):
    aioboto3 = require("aioboto3", group="aioboto3")
    session = aioboto3.Session(region_name="us-east-1", **CREDS)
    inst = bedrock_hooks.install(session, runtime=fake_time.runtime())
    assert inst.kind == "session" and inst.active and inst.target is session._session

    async def call():
        async with session.client("bedrock-runtime", endpoint_url=server.url) as client:
            return await _daily_quota(client, server)

    error, ids = asyncio.run(call())
    assert ids and _hooked(error, server)
    bedrock_hooks.uninstall(session)
    assert bedrock_hooks.installation_for(session) is None


def test_install_everywhere_covers_sync_and_async_clients_alike(server, fake_time):
    require("aiobotocore.session", group="aio")  # before install(): aiobotocore imported, its patch engaged
    everywhere = bedrock_hooks.install(runtime=fake_time.runtime())
    assert patches.AIO_CREATE_CLIENT.held_by(everywhere) and patches.CREATE_CLIENT.held_by(everywhere)

    async def call():
        async with aio_client(aiobotocore_session(), server) as client:
            assert client in everywhere.clients
            return await _daily_quota(client, server)

    error, ids = asyncio.run(call())
    assert _hooked(error, server)
    sync = make_client(new_session(), server)
    assert our_ids(sync)
    assert set(our_ids(sync)) >= set(ids)  # the same handlers (streams attach where they serve aio)
    bedrock_hooks.uninstall()
    assert patches.AIO_CREATE_CLIENT.state() is patches.State.OFF


def test_an_aio_client_gets_the_same_features_as_a_sync_one_from_the_same_installation(server, fake_time):
    everywhere = bedrock_hooks.install(runtime=fake_time.runtime())

    async def features():
        async with aio_client(aiobotocore_session(), server) as client:
            return [type(f) for f in attached_features(client)]

    sync = [type(f) for f in attached_features(make_client(new_session(), server))]
    aio = asyncio.run(features())
    counterpart = {ConnectionHygiene: AioConnectionHygiene}  # the same feature on aiohttp's connector
    assert aio == [counterpart.get(cls, cls) for cls in sync]
    assert everywhere.settings is not None


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEDROCK_HOOKS_", "AWS_", "PYTHON"))}
    env.update(AWS_ACCESS_KEY_ID=CREDS["aws_access_key_id"], AWS_SECRET_ACCESS_KEY=CREDS["aws_secret_access_key"],
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, PYTHONPATH=str(REPO))
    env.update(extra)
    return env


#: An unmodified async application: nothing in it knows about bedrock-hooks.
ASYNC_APP = textwrap.dedent(
    """
    import asyncio, json, os, sys
    import aiobotocore.session

    async def main():
        session = aiobotocore.session.get_session()
        async with session.create_client("bedrock-runtime", endpoint_url=os.environ["APP_ENDPOINT"]) as client:
            try:
                await client.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}])
                result = {"ok": True}
            except Exception as exc:
                result = {"ok": False, "error": str(exc), "info": getattr(exc, "response", {}).get("BedrockHooks")}
        print("RESULT " + json.dumps(result))

    asyncio.run(main())
    """
)


def test_the_launcher_covers_an_async_application(server, tmp_path):
    require("aiobotocore", group="aio")
    app = tmp_path / "app.py"
    app.write_text(ASYNC_APP)
    env = _clean_env(APP_ENDPOINT=server.url, PYTHONPATH=os.pathsep.join([str(BOOTSTRAP), str(REPO)]))
    server.script(DAILY, DAILY, DAILY)
    done = subprocess.run([sys.executable, str(app)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert not result["ok"] and result["info"]["entry"] == "DailyTokenQuotaExceeded"
    assert "[bedrock-hooks] DailyTokenQuotaExceeded (fail)" in result["error"]
    assert len(server.requests) == 1  # plain aiobotocore would have retried it
    assert "never awaited" not in done.stderr


def test_install_before_aiobotocore_is_imported_covers_its_sessions_later(server):
    require("aiobotocore", group="aio")
    script = textwrap.dedent(
        """
        import sys
        import bedrock_hooks
        bedrock_hooks.install()
        assert "aiobotocore" not in sys.modules
        """
    ) + ASYNC_APP
    server.script(DAILY, DAILY, DAILY)
    done = subprocess.run([sys.executable, "-c", script], env=_clean_env(APP_ENDPOINT=server.url),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["info"]["entry"] == "DailyTokenQuotaExceeded" and len(server.requests) == 1


def test_without_aiobotocore_nothing_async_is_imported(server):
    script = textwrap.dedent(
        """
        import os, sys
        import boto3, bedrock_hooks
        inst = bedrock_hooks.install()
        client = boto3.client("bedrock-runtime", endpoint_url=os.environ["APP_ENDPOINT"])
        client.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}])
        from bedrock_hooks import doctor, patches
        patches.report()
        # (asyncio itself may be imported: wrapt 2 imports it)
        print("ASYNC", sorted(m for m in ("aiobotocore", "aioboto3", "aiohttp", "httpx") if m in sys.modules))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], env=_clean_env(APP_ENDPOINT=server.url),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ASYNC []" in done.stdout


def test_aiobotocores_patch_under_another_wrapper_is_left_in_place_as_a_pass_through(server, fake_time):
    """patches.py's discipline for the async layer: refcounted, another library's wrapper on top of ours
    (OpenTelemetry, a test's mock) is never dropped; ours then passes through, and is re-armed."""
    require("aiobotocore.client", group="aio")
    wrapt = require("wrapt", group="aio")
    from aiobotocore.client import AioClientCreator

    original = vars(AioClientCreator)["create_client"]
    session_installation = bedrock_hooks.install(aiobotocore_session(), runtime=fake_time.runtime())
    everywhere = bedrock_hooks.install(runtime=fake_time.runtime())
    ours = vars(AioClientCreator)["create_client"]
    assert ours is not original and patches.AIO_CREATE_CLIENT.state() is patches.State.ON
    session_installation.uninstall()
    assert patches.AIO_CREATE_CLIENT.state() is patches.State.ON  # still held by install()
    seen = []

    async def theirs(wrapped, instance, args, kwargs):
        seen.append(instance)
        return await wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(AioClientCreator, "create_client", theirs)
    try:
        everywhere.uninstall()
        assert patches.AIO_CREATE_CLIENT.state() is patches.State.PASS_THROUGH

        async def create():
            async with aio_client(aiobotocore_session(), server) as client:
                return our_ids(client)

        assert asyncio.run(create()) == [] and len(seen) == 1  # their wrapper ran, ours passed through
        again = bedrock_hooks.install(runtime=fake_time.runtime())
        assert patches.AIO_CREATE_CLIENT.state() is patches.State.UNDER
        assert asyncio.run(create()) and len(seen) == 2  # re-armed under their wrapper
        again.uninstall()
    finally:
        setattr(AioClientCreator, "create_client", original)
        patches.AIO_CREATE_CLIENT._layer = patches.AIO_CREATE_CLIENT._original = None
