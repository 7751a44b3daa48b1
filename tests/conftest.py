"""Shared fixtures: a real loopback Bedrock-shaped server and real boto3 clients pointed at it."""

from __future__ import annotations

import os
import random
import threading
import time
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import boto3
import botocore.endpoint
import botocore.loaders
import botocore.retries.bucket
import botocore.session
import pytest
from botocore.config import Config

import bedrock_hooks
from bedrock_hooks.features import Runtime
from bedrock_hooks.testing import BedrockServer


def library_variables(environ: Mapping[str, str]) -> list[str]:
    """The library's settings in ``environ``, which no test may inherit from the shell that started pytest.
    ``BEDROCK_HOOKS_TEST_*`` (``.ci/run``'s ``BEDROCK_HOOKS_TEST_REQUIRE``) is the harness's, and stays."""
    return [n for n in environ if n.startswith("BEDROCK_HOOKS_") and not n.startswith("BEDROCK_HOOKS_TEST_")]


# Tests must never reach a real credential provider or endpoint.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
for _name in library_variables(os.environ):
    del os.environ[_name]

CREDS = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


@dataclass
class FakeTime:
    """A clock that only moves when the library sleeps: retries run instantly and are measurable."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        """The async clients' sleep: records and advances like :meth:`sleep`, never waits."""
        self.sleep(seconds)

    def runtime(self, seed: int = 7) -> Runtime:
        return Runtime(clock=self.clock, sleep=self.sleep, async_sleep=self.async_sleep, rng=random.Random(seed))


@dataclass
class BotocoreTime:
    """botocore's own clocks, faked for every test: plain botocore's backoff sleeps (``endpoint.py``, all
    retry modes) and adaptive mode's token bucket (``retries/bucket.py``) move this clock instead of
    waiting, so a baseline "without the library" costs no real seconds. Separate from :class:`FakeTime`
    (the library's runtime), whose ``sleeps`` tests assert on."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)

    def current_time(self) -> float:
        return self.now


def _fake_botocore_clocks(monkeypatch: pytest.MonkeyPatch, fake: BotocoreTime) -> None:
    class Clock:  # botocore.retries.bucket.Clock: adaptive mode's rate clock and token bucket clock
        sleep = staticmethod(fake.sleep)
        current_time = staticmethod(fake.current_time)

    class Condition(threading.Condition):  # the token bucket waits for capacity on this condition
        def wait(self, timeout: float | None = None) -> bool:
            # at least 1 ms: a remaining wait below the float resolution of the clock would never end
            fake.sleep(max(timeout or 0.0, 0.001))
            return False

    endpoint_time = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("__")})
    endpoint_time.sleep = fake.sleep
    monkeypatch.setattr(botocore.endpoint, "time", endpoint_time)
    monkeypatch.setattr(botocore.retries.bucket, "Clock", Clock)
    monkeypatch.setattr(botocore.retries.bucket, "threading",
                        types.SimpleNamespace(Lock=threading.Lock, Condition=Condition))


@pytest.fixture(autouse=True)
def botocore_time(monkeypatch: pytest.MonkeyPatch) -> BotocoreTime:
    fake = BotocoreTime()
    _fake_botocore_clocks(monkeypatch, fake)
    return fake


@pytest.fixture(scope="session")
def _server() -> Iterator[BedrockServer]:
    with BedrockServer() as server:
        yield server


@pytest.fixture
def server(_server: BedrockServer) -> Iterator[BedrockServer]:
    _server.reset()
    yield _server
    _server.reset()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture(autouse=True)
def _clean_install(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in library_variables(os.environ):
        monkeypatch.delenv(name)
    yield
    bedrock_hooks.uninstall("*")


#: botocore's loader caches the service models it parsed per session; tests create hundreds of sessions,
#: so they share one loader (read-only data) instead of re-reading the same JSON for each.
_LOADER = botocore.loaders.create_loader()


def new_botocore_session() -> botocore.session.Session:
    session = botocore.session.Session()
    session.register_component("data_loader", _LOADER)
    return session


def new_session() -> boto3.Session:
    return boto3.Session(botocore_session=new_botocore_session(), region_name="us-east-1", **CREDS)


def make_client(session: boto3.Session, server: BedrockServer, service: str = "bedrock-runtime",
                mode: str = "standard", **config: object):
    retries = dict(config.pop("retries", {}) or {})
    retries.setdefault("mode", mode)
    cfg = Config(retries=retries, connect_timeout=2, read_timeout=config.pop("read_timeout", 5), **config)
    return session.client(service, endpoint_url=server.url, config=cfg)


def converse(client, model: str = "anthropic.claude-3-haiku-20240307-v1:0"):
    return client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "hi"}]}])


# -- tests of features that need a private botocore internal ------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_internals(*features): the test exercises bedrock_hooks.compat features "
                            "(e.g. 'clock-skew'); where this botocore lacks their internals it must fail (strict xfail)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test of a feature this botocore cannot support is expected to fail, strictly: if it passed, the
    compat table would be wrong. Which features each botocore lacks is pinned by tests/test_compat.py, so
    this can never hide a regression on a botocore that has the internals."""
    from bedrock_hooks import compat

    for item in items:
        for mark in item.iter_markers("needs_internals"):
            lacking = {feature: compat.missing(feature) for feature in mark.args if compat.missing(feature)}
            if lacking:
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"this botocore lacks {lacking}"))
