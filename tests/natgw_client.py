"""The client side of the NAT emulation: one scenario, one process, one JSON line on stdout.

``python natgw_client.py --endpoint URL --scenario NAME --idle SECONDS [...]`` makes warm calls
(``converse``) with a real boto3 ``bedrock-runtime`` client, idles past the gateway's conntrack
timeout, calls again and reports latencies and the server-side connection ids (from the
``x-bh-connection-id`` header added by ``natgw_server.py``); the warm reference is the median of
the warm calls before and after. ``--aio``: the same with a real aiobotocore client. Scenarios:

* ``plain``: botocore as shipped.
* ``tcp_keepalive``: ``Config(tcp_keepalive=True)`` -- SO_KEEPALIVE with the OS default first probe.
* ``keepalive``: bedrock-hooks installed, keep-alive scaled to the emulated timeout.
* ``eviction``: bedrock-hooks with keep-alive off and ``pool_max_idle`` scaled below the timeout.
* ``reconnect``: bedrock-hooks with both off: only the immediate reconnect retry is left.

``--slow S`` makes the second call's answer take S seconds (model id ``slow-S``, see
``natgw_server.py``): the idle flow is then a request in flight, not a pooled connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

CREDS = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "secret", "region_name": "us-east-1"}


def scenario_settings(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(botocore Config kwargs, bedrock_hooks.install overrides or None for plain botocore)."""
    if name == "plain":
        return {}, None
    if name == "tcp_keepalive":
        return {"tcp_keepalive": True}, None
    if name == "keepalive":
        return {}, {"keepalive_idle": args.ka_idle, "keepalive_interval": args.ka_interval,
                    "keepalive_count": args.ka_count}
    if name == "eviction":
        return {}, {"keepalive": False, "pool_max_idle": args.max_idle}
    if name == "reconnect":
        return {}, {"keepalive": False, "pool_max_idle": 0}
    raise SystemExit(f"unknown scenario {name!r}")


MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
Call = Callable[[str], dict[str, Any]]  #: one timed converse with this model id


def timed_call(client: Any, model: str, complete: Callable[[Any], Any] = lambda response: response) -> dict[str, Any]:
    """One ``converse``; ``complete`` awaits the coroutine an aiobotocore client returns."""
    start = time.monotonic()
    try:
        response = complete(client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "hi"}]}]))
    except Exception as exc:  # reported, not raised: the harness asserts on it
        return {"latency": time.monotonic() - start, "error": f"{type(exc).__name__}: {exc}"}
    meta = response["ResponseMetadata"]
    return {"latency": time.monotonic() - start, "connection": int(meta["HTTPHeaders"]["x-bh-connection-id"]),
            "retries": meta.get("RetryAttempts", 0), "error": None}


def client_config(args: argparse.Namespace, config_kwargs: dict[str, Any]) -> dict[str, Any]:
    retries = {"retries": {"total_max_attempts": args.attempts}} if args.attempts else {}
    return {"connect_timeout": 2, "read_timeout": args.read_timeout, **retries, **config_kwargs}


def sync_caller(args: argparse.Namespace) -> Call:
    """A real boto3 client with the scenario's settings: one ``timed_call`` per call."""
    config_kwargs, overrides = scenario_settings(args.scenario, args)
    session = boto3.Session(**CREDS)
    if overrides is not None:
        import bedrock_hooks

        bedrock_hooks.install(session, **overrides)
    client = session.client("bedrock-runtime", endpoint_url=args.endpoint, config=Config(**client_config(args, config_kwargs)))
    return lambda model: timed_call(client, model)


def aio_caller(args: argparse.Namespace) -> Call:
    """The same with a real aiobotocore client, driven by one event loop that runs only during calls
    (aiobotocore's own connector settings: its 12 s ``keepalive_timeout`` is longer than the idle)."""
    import aiobotocore.session
    from aiobotocore.config import AioConfig

    config_kwargs, overrides = scenario_settings(args.scenario, args)
    loop = asyncio.new_event_loop()
    config = AioConfig(**client_config(args, config_kwargs))
    context = aiobotocore.session.get_session().create_client(
        "bedrock-runtime", endpoint_url=args.endpoint, config=config, **CREDS)
    client = loop.run_until_complete(context.__aenter__())
    if overrides is not None:
        import bedrock_hooks

        bedrock_hooks.install(client, **overrides)

    return lambda model: timed_call(client, model, loop.run_until_complete)


def run(args: argparse.Namespace) -> dict[str, Any]:
    call = aio_caller(args) if args.aio else sync_caller(args)
    warm = [call(MODEL) for _ in range(args.warm)]
    time.sleep(args.idle)
    second = call(f"slow-{args.slow:g}" if args.slow else MODEL)
    # The warm reference is taken after the second call too: the parallel scenario processes are
    # all idle then, so it is not inflated by their start-up.
    after = [call(MODEL) for _ in range(args.warm)]
    warm_latency = statistics.median(c["latency"] for c in warm[1:] + after if c["error"] is None)
    return {
        "scenario": args.scenario, "endpoint": args.endpoint, "idle": args.idle,
        "warm": warm_latency, "warm_connection": warm[-1].get("connection"),
        "second": second["latency"], "second_connection": second.get("connection"),
        "same_connection": second.get("connection") == warm[-1].get("connection"),
        "retries": second.get("retries"), "error": second["error"],
        "ratio": second["latency"] / warm_latency if warm_latency else None,
    }


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--idle", type=float, required=True, help="seconds between the warm calls and the second call")
    parser.add_argument("--read-timeout", type=float, default=3.0)
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument("--ka-idle", type=int, default=1)
    parser.add_argument("--ka-interval", type=int, default=1)
    parser.add_argument("--ka-count", type=int, default=3)
    parser.add_argument("--max-idle", type=float, default=1.5)
    parser.add_argument("--aio", action="store_true", help="an aiobotocore client instead of boto3")
    parser.add_argument("--slow", type=float, default=0.0,
                        help="the server answers the second call after this many seconds (a request in flight idles)")
    parser.add_argument("--attempts", type=int, default=0, help="Config(retries={'total_max_attempts': N}); 0: the default")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(run(parse(sys.argv[1:]))), flush=True)
