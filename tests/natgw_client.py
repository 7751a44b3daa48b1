"""The client side of the NAT emulation: one scenario, one process, one JSON line on stdout.

``python natgw_client.py --endpoint URL --scenario NAME --idle SECONDS [...]`` makes warm calls
(``converse``) with a real boto3 ``bedrock-runtime`` client, idles past the gateway's conntrack
timeout, calls again and reports latencies and the server-side connection ids (from the
``x-bh-connection-id`` header added by ``natgw_server.py``); the warm reference is the median of
the warm calls before and after. Scenarios:

* ``plain``: botocore as shipped.
* ``tcp_keepalive``: ``Config(tcp_keepalive=True)`` -- SO_KEEPALIVE with the OS default first probe.
* ``keepalive``: bedrock-hooks installed, keep-alive scaled to the emulated timeout.
* ``eviction``: bedrock-hooks with keep-alive off and ``pool_max_idle`` scaled below the timeout.
* ``reconnect``: bedrock-hooks with both off: only the immediate reconnect retry is left.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
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


def timed_call(client: Any) -> dict[str, Any]:
    start = time.monotonic()
    try:
        response = client.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                                   messages=[{"role": "user", "content": [{"text": "hi"}]}])
    except Exception as exc:  # reported, not raised: the harness asserts on it
        return {"latency": time.monotonic() - start, "error": f"{type(exc).__name__}: {exc}"}
    meta = response["ResponseMetadata"]
    return {"latency": time.monotonic() - start, "connection": int(meta["HTTPHeaders"]["x-bh-connection-id"]),
            "retries": meta.get("RetryAttempts", 0), "error": None}


def run(args: argparse.Namespace) -> dict[str, Any]:
    config_kwargs, overrides = scenario_settings(args.scenario, args)
    session = boto3.Session(**CREDS)
    if overrides is not None:
        import bedrock_hooks

        bedrock_hooks.install(session, **overrides)
    config = Config(connect_timeout=2, read_timeout=args.read_timeout, **config_kwargs)
    client = session.client("bedrock-runtime", endpoint_url=args.endpoint, config=config)
    warm = [timed_call(client) for _ in range(args.warm)]
    time.sleep(args.idle)
    second = timed_call(client)
    # The warm reference is taken after the second call too: the parallel scenario processes are
    # all idle then, so it is not inflated by their start-up.
    after = [timed_call(client) for _ in range(args.warm)]
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
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(run(parse(sys.argv[1:]))), flush=True)
