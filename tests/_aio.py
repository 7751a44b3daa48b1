"""Real aiobotocore clients against the loopback server, for the ``test_aio_*`` files.

aiobotocore is optional (group ``aio``): :func:`aiobotocore_session` skips (or fails, where CI requires
the group) without it. Plain aiobotocore's own waits (its retry handler's backoff, adaptive mode's
token bucket) are faked by :func:`aio_botocore_time` (autouse where imported), as conftest fakes
botocore's, so a baseline without the library costs no real seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.config import Config

from _requires import require
from conftest import _LOADER, CREDS, BotocoreTime

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]


def aiobotocore_session() -> Any:
    """A fresh ``AioSession`` (sharing the tests' model loader)."""
    module = require("aiobotocore.session", group="aio")
    session = module.AioSession()
    session.register_component("data_loader", _LOADER)
    return session


@contextlib.asynccontextmanager
async def aio_client(session: Any, server: Any, service: str = "bedrock-runtime", mode: str = "standard",
                     *, session_credentials: bool = False, **config: Any) -> AsyncIterator[Any]:
    """An aiobotocore client of ``session`` pointed at ``server`` (closed on exit); it signs with the test keys
    unless ``session_credentials`` (then with the session's own credentials)."""
    retries = dict(config.pop("retries", {}) or {})
    retries.setdefault("mode", mode)
    cfg = Config(retries=retries, connect_timeout=2, read_timeout=config.pop("read_timeout", 5), **config)
    keys = {} if session_credentials else CREDS
    async with session.create_client(service, region_name="us-east-1", endpoint_url=server.url, config=cfg,
                                     **keys) as client:
        yield client


async def aconverse(client: Any, model: str = MODEL, text: str = "hi") -> dict[str, Any]:
    return await client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": text}]}])


def our_ids(client: Any) -> list[str]:
    """The unique ids of the handlers bedrock-hooks put on ``client``'s emitter."""
    emitter = client.meta.events
    while hasattr(emitter, "_emitter"):
        emitter = emitter._emitter
    return sorted(k for k in emitter._unique_id_handlers if k.startswith("bedrock-hooks"))


@pytest.fixture(autouse=True)
def aio_botocore_time(monkeypatch: pytest.MonkeyPatch, botocore_time: BotocoreTime) -> BotocoreTime:
    """aiobotocore's own sleeps move conftest's botocore clock instead of waiting (when it is installed)."""
    try:
        import aiobotocore.endpoint
        import aiobotocore.retries.bucket as aio_bucket
    except ImportError:
        return botocore_time

    async def fake_sleep(seconds: float, *args: Any, **kwargs: Any) -> None:
        botocore_time.sleep(seconds)
        await _real_sleep(0)

    async def fake_wait_for(awaitable: Any, timeout: float | None = None) -> None:
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()  # the condition's wait coroutine: never started
        botocore_time.sleep(max(timeout or 0.0, 0.001))
        await _real_sleep(0)
        raise asyncio.TimeoutError

    class Clock:  # adaptive mode's rate clock and token bucket clock
        sleep = staticmethod(botocore_time.sleep)
        current_time = staticmethod(botocore_time.current_time)

    fake_asyncio = types.SimpleNamespace(**{n: getattr(asyncio, n) for n in dir(asyncio) if not n.startswith("__")})
    fake_asyncio.sleep, fake_asyncio.wait_for = fake_sleep, fake_wait_for
    # aiobotocore 3.x sleeps in AioEndpoint._sleep and AsyncTokenBucket._wait_for_new_fill_rate; 2.x calls
    # asyncio.sleep / asyncio.wait_for in those modules directly
    if hasattr(aiobotocore.endpoint.AioEndpoint, "_sleep"):
        monkeypatch.setattr(aiobotocore.endpoint.AioEndpoint, "_sleep", lambda self, seconds: fake_sleep(seconds))
    else:
        monkeypatch.setattr(aiobotocore.endpoint, "asyncio", fake_asyncio)
    if hasattr(aio_bucket.AsyncTokenBucket, "_wait_for_new_fill_rate"):
        monkeypatch.setattr(aio_bucket.AsyncTokenBucket, "_wait_for_new_fill_rate",
                            lambda self, seconds: fake_sleep(max(seconds, 0.001)))
    else:
        monkeypatch.setattr(aio_bucket, "asyncio", fake_asyncio)
    monkeypatch.setattr(aio_bucket, "Clock", Clock)
    return botocore_time


_real_sleep = asyncio.sleep
