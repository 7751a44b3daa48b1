"""The autouse fixture of the tests that touch process-wide state (import it into the test module).

Routers (circuits, remembered profiles) and rate-limiter buckets live for the whole process; each test
starts and ends with none, whatever the last uninstall does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bedrock_hooks import fallbacks, ratelimit


@pytest.fixture(autouse=True)
def fresh_shared_state() -> Iterator[None]:
    fallbacks.reset_routers()
    ratelimit.reset()
    yield
    fallbacks.reset_routers()
    ratelimit.reset()


def throttle_from_two_threads(clients: list, fake_time, call) -> None:
    """A storm that engages the rate limiter: 20 throttled calls from this thread over a second (one thread
    alone does not engage it), then one from a second thread while the first is still alive (a finished
    thread's id may be reused by the next one)."""
    import threading

    for _ in range(20):
        call(clients[0])
        fake_time.now += 0.05
    release, first_done = threading.Event(), threading.Event()

    def first() -> None:
        call(clients[0])
        first_done.set()
        release.wait(5)

    t = threading.Thread(target=first)
    t.start()
    first_done.wait(5)
    second = threading.Thread(target=call, args=(clients[1],))
    second.start()
    second.join()
    release.set()
    t.join()


#: A sync fleet worker: ``calls`` Converse calls of one model on one hooked boto3 client (state from the
#: environment's BEDROCK_HOOKS_STATE_URL); prints the model that served each call, or the error's name.
WORKER = r"""
import json, random, sys
import boto3
from botocore.config import Config
import bedrock_hooks
from bedrock_hooks.features import Runtime
url, model, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
session = boto3.Session(region_name="us-east-1", aws_access_key_id=sys.argv[4], aws_secret_access_key=sys.argv[5])
bedrock_hooks.install(session, runtime=Runtime(sleep=lambda s: None, rng=random.Random(1)), max_attempts=1)
client = session.client("bedrock-runtime", endpoint_url=url, config=Config(retries={"mode": "standard"}))
seen = []
for _ in range(calls):
    try:
        out = client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "hi"}]}])
        seen.append(out.get("BedrockHooks", {}).get("served_by", {}).get("model", model))
    except Exception as exc:
        seen.append(type(exc).__name__)
print(json.dumps(seen))
"""
