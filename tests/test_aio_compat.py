"""bedrock_hooks.compat for aiobotocore: its private internals are probed like botocore's, only once the
application imported aiobotocore, and a missing one turns off only its feature (issue 13).

Run on aiobotocore 3.x (group ``aio``) and 2.25 (the one aioboto3 pins, group ``aioboto3``)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import subprocess
import sys

import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks import compat, doctor, patches
from bedrock_hooks.budget import budget_for
from bedrock_hooks.testing import Reply
from _requires import require
from _aio import aconverse, aio_botocore_time, aio_client, aiobotocore_session, our_ids  # noqa: F401 (fixture)
from test_aio_retry import AsyncProvider, _expire, _refreshable_aio_session

MINE = (compat.AIO_SESSIONS, compat.AIO_REFRESH_CREDENTIALS, compat.AIO_RETRY_QUOTA, compat.AIO_CUT_ANSWERS)


@pytest.fixture(autouse=True)
def fresh_compat():
    compat.reset()
    yield
    compat.reset()


def _broken(monkeypatch, feature: str) -> None:
    def gone() -> bool:
        raise AttributeError("'AioExample' object has no attribute '_gone'")

    monkeypatch.setattr(compat, "CHECKS", tuple(dataclasses.replace(c, probe=gone) if feature in c.features
                                                else c for c in compat.CHECKS))


def test_every_aiobotocore_internal_of_the_core_is_present_here():
    aiobotocore_session()  # imports aiobotocore
    rows = [row for row in compat.report() if set(row.features) & set(MINE)]
    assert sorted(f for row in rows for f in row.features) == sorted(MINE)
    assert all(row.ok and row.pending is None for row in rows), rows


def test_the_probes_never_import_aiobotocore():
    code = ("import sys, bedrock_hooks.compat as c; rows = c.report(); "
            "print(all(r.pending for r in rows if r.internal.startswith('aiobotocore')), 'aiobotocore' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.stdout.split() == ["True", "False"], done.stderr


def test_doctor_shows_a_missing_aiobotocore_internal_and_what_it_turns_off(monkeypatch):
    aiobotocore_session()
    _broken(monkeypatch, compat.AIO_REFRESH_CREDENTIALS)
    rows = {c.name: c for c in doctor.doctor({}, sections=[doctor.check_compatibility])}
    (row,) = [c for name, c in rows.items() if "AioRefreshableCredentials" in name]
    assert row.status == "warn" and "forced refresh of expired aiobotocore refreshable credentials" in row.detail


def test_without_the_async_refresh_internals_only_the_refresh_is_off(monkeypatch, server, fake_time, caplog):
    require("aiobotocore.credentials", group="aio")
    _broken(monkeypatch, compat.AIO_REFRESH_CREDENTIALS)
    caplog.set_level(logging.WARNING, logger="bedrock_hooks.compat")
    provider = AsyncProvider()

    async def scenario():
        session = _refreshable_aio_session(provider)
        bedrock_hooks.install(session, runtime=fake_time.runtime())
        async with aio_client(session, server, session_credentials=True) as client:
            _expire(server, "AKID0")
            with pytest.raises(ClientError) as raised:
                await aconverse(client)
            server.handler = None
            server.script(Reply.throttling())
            ok = await aconverse(client)  # retries still decided by the library
            return raised.value, ok

    error, ok = asyncio.run(scenario())
    assert provider.calls == 0 and error.response["BedrockHooks"]["entry"] == "ExpiredToken"
    assert ok["ResponseMetadata"]["RetryAttempts"] == 1 and fake_time.sleeps
    warnings = [r.getMessage() for r in caplog.records if r.name == "bedrock_hooks.compat"]
    assert len(warnings) == 1 and "aiobotocore refreshable credentials" in warnings[0]


def test_without_the_session_internal_install_session_falls_back_to_install_everywhere(monkeypatch, server,
                                                                                         fake_time):
    _broken(monkeypatch, compat.AIO_SESSIONS)

    async def scenario():
        session = aiobotocore_session()
        bedrock_hooks.install(session, runtime=fake_time.runtime())
        async with aio_client(session, server) as scoped:
            assert our_ids(scoped) == []  # the session cannot be told: its clients stay plain
            bedrock_hooks.install(scoped)  # one client: no aiobotocore internal needed
            assert our_ids(scoped)
        bedrock_hooks.install(runtime=fake_time.runtime())
        async with aio_client(aiobotocore_session(), server) as everywhere:
            assert our_ids(everywhere)  # install() needs no session lookup

    asyncio.run(scenario())


def test_a_client_creator_that_is_no_longer_a_coroutine_is_not_patched(monkeypatch, caplog):
    require("aiobotocore.client", group="aio")
    from aiobotocore.client import AioClientCreator

    def create_client(self, *args, **kwargs):  # what a future aiobotocore might do
        raise AssertionError("not called here")

    monkeypatch.setattr(AioClientCreator, "create_client", create_client)
    monkeypatch.setattr(patches.AIO_CREATE_CLIENT, "_unavailable", False)
    caplog.set_level(logging.WARNING, logger="bedrock_hooks")
    everywhere = bedrock_hooks.install()
    assert vars(AioClientCreator)["create_client"] is create_client  # not wrapped in an async layer
    assert not patches.AIO_CREATE_CLIENT.held_by(everywhere)
    assert any("not a coroutine" in r.getMessage() for r in caplog.records)


def test_without_aiobotocores_retry_quota_retries_are_not_metered(monkeypatch, server, fake_time):
    _broken(monkeypatch, compat.AIO_RETRY_QUOTA)

    async def scenario():
        session = aiobotocore_session()
        bedrock_hooks.install(session, runtime=fake_time.runtime())
        async with aio_client(session, server) as client:
            server.script(Reply.throttling())
            reply = await aconverse(client)
            return reply, budget_for(client)

    reply, budget = asyncio.run(scenario())
    assert reply["ResponseMetadata"]["RetryAttempts"] == 1 and budget.available is None
