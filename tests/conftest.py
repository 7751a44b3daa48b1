"""Shared fixtures: a real loopback Bedrock-shaped server and real boto3 clients pointed at it."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import boto3
import pytest
from botocore.config import Config

import bedrock_hooks
from bedrock_hooks.features import Runtime
from bedrock_hooks.testing import BedrockServer

# Tests must never reach a real credential provider or endpoint.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
for _name in [n for n in os.environ if n.startswith("BEDROCK_HOOKS_") and not n.startswith("BEDROCK_HOOKS_TEST_")]:
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

    def runtime(self, seed: int = 7) -> Runtime:
        return Runtime(clock=self.clock, sleep=self.sleep, rng=random.Random(seed))


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
    for name in [n for n in os.environ if n.startswith("BEDROCK_HOOKS_") and not n.startswith("BEDROCK_HOOKS_TEST_")]:
        monkeypatch.delenv(name)
    yield
    bedrock_hooks.uninstall("*")


def new_session() -> boto3.Session:
    return boto3.Session(region_name="us-east-1", **CREDS)


def make_client(session: boto3.Session, server: BedrockServer, service: str = "bedrock-runtime",
                mode: str = "standard", **config: object):
    retries = dict(config.pop("retries", {}) or {})
    retries.setdefault("mode", mode)
    cfg = Config(retries=retries, connect_timeout=2, read_timeout=config.pop("read_timeout", 5), **config)
    return session.client(service, endpoint_url=server.url, config=cfg)


def converse(client, model: str = "anthropic.claude-3-haiku-20240307-v1:0"):
    return client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "hi"}]}])
