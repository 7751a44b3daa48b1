"""bedrock-hooks on an async application (aiobotocore), against a local Bedrock-shaped server.

Run:  pip install -e ".[aio]" && python examples/async_quickstart.py

Nothing leaves this machine: the server is bedrock_hooks.testing.BedrockServer on 127.0.0.1, and the
credentials are fake. The application is ordinary aiobotocore code; the one added line is
``bedrock_hooks.install()``. Backoff here is shortened (``throttle_backoff_base``) so the demo takes a
second; the waits are real ``asyncio.sleep``s, so the event loop keeps serving a heartbeat task.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from botocore.exceptions import ClientError  # noqa: E402

import bedrock_hooks  # noqa: E402
from bedrock_hooks.testing import BedrockServer, Reply  # noqa: E402

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
CREDS = {"region_name": "us-east-1", "aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "example"}
TASKS = 20


def first_try_throttled():
    """A busy quota: every call's first request is answered 429 ThrottlingException, its retry is served."""
    seen: set[bytes] = set()

    def handler(request):
        if request.body in seen:
            return None
        seen.add(request.body)
        return Reply.throttling()

    return handler


async def heartbeat(stop: asyncio.Event, ticks: list[float]) -> None:
    """Ticks every millisecond while the calls run: a loop blocked by a backoff would stop it."""
    while not stop.is_set():
        await asyncio.sleep(0.001)
        ticks.append(time.perf_counter())


async def ask(client, n: int) -> str:
    reply = await client.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": f"hello {n}"}]}])
    return reply["output"]["message"]["content"][0]["text"]


async def main(server: BedrockServer) -> dict[str, object]:
    import aiobotocore.session

    session = aiobotocore.session.get_session()
    async with session.create_client("bedrock-runtime", endpoint_url=server.url, **CREDS) as client:
        await ask(client, -1)  # the first call loads the service's rules and models (plain aiobotocore does too)
        server.reset()
        server.handler = first_try_throttled()
        stop, ticks = asyncio.Event(), []
        beat = asyncio.create_task(heartbeat(stop, ticks))
        started = time.perf_counter()
        answers = await asyncio.gather(*(ask(client, n) for n in range(TASKS)))
        took = time.perf_counter() - started
        stop.set()
        await beat
        result: dict[str, object] = {"answers": len(answers), "requests": len(server.requests),
                                     "seconds": round(took, 2), "heartbeats": len(ticks)}

        server.reset()
        server.script(Reply.throttling("Too many tokens per day, please wait before trying again."))
        try:
            await ask(client, 0)
        except ClientError as error:
            result["daily_quota"] = {"requests": len(server.requests), "entry": error.response["BedrockHooks"]["entry"],
                                     "hint": str(error).splitlines()[-1]}
        return result


def run() -> dict[str, object]:
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    bedrock_hooks.install(throttle_backoff_base=0.01, backoff_base=0.01)  # once, at startup (short demo waits)
    try:
        with BedrockServer() as server:
            return asyncio.run(main(server))
    finally:
        bedrock_hooks.uninstall()


if __name__ == "__main__":
    outcome = run()
    print(f"{outcome['answers']} concurrent converse calls, each throttled once: all answered "
          f"({outcome['requests']} requests, {outcome['seconds']} s); a 1 ms heartbeat task ticked "
          f"{outcome['heartbeats']} times meanwhile: the backoffs were awaited, the loop never blocked")
    quota = outcome["daily_quota"]
    print(f"daily token quota exhausted: {quota['requests']} request, not retried ({quota['entry']})")
    print(f"  {quota['hint']}")
