"""Benchmark: many threads against a model's *token* quota (issue 14), botocore adaptive vs bedrock-hooks.

The server (own process) enforces Bedrock's tokens-per-minute quota on one model
(:mod:`bedrock_hooks.testing.quota`): each request reserves ``input + maxTokens`` at its start (429
"Too many tokens" when the bucket cannot hold it) and is settled to its real charge (input + output)
when its answer, ``--service-ms`` later, is written. The bucket refills at ``--tpm / 60`` tokens/s and
holds ``--burst-s`` seconds of it (Bedrock's holds a minute; a short run needs a shallow bucket so
that the steady state, not the initial credit, decides). Every call is a Converse with a ~50-token
prompt and ``maxTokens`` ``--max-tokens``; answers are ``--output-tokens`` long.

``--threads`` worker threads (each with its own client, as worker pools do) call back to back for
``--duration`` s; a call succeeds if it returns within ``--deadline`` s. Modes, in rotating order:

* ``botocore adaptive``: botocore's client-side rate limiter (per client, counts requests);
* ``bedrock-hooks, rate limiter off``: the library's retries only (default legacy-mode client);
* ``bedrock-hooks``: defaults: the process-wide limiter, learning the token rate from throttling;
* ``bedrock-hooks + BEDROCK_HOOKS_QUOTAS``: the same, told the quota (``MODEL=TPM/min``).

Reported per mode and thread count: goodput while the storm lasts (requests the quota admitted per
second, and the quota tokens settled as a share of what the quota could settle in that time: burst +
duration x refill; read when ``--duration`` is up, so the calls still finishing, and their backoff
sleeps, show in the latencies, not here), 429s per successful call, p50/p99 latency of all calls
(including those finishing after the end), success rate (calls answered within the deadline).

    python bench/token_storm.py                  # ~3 min: 4, 16, 64, 256 threads
    python bench/token_storm.py --smoke          # seconds; numbers mean nothing
    python bench/token_storm.py --threads 64 --mode "bedrock-hooks"

Importable: ``run(smoke=True)`` returns the result dict, ``table(result)`` the markdown.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (MODEL, ServerProcess, build_clients, hooks_available_options, markdown_table,  # noqa: E402
                     release_clients, run_load)

PROMPT = [{"role": "user", "content": [{"text": "Summarise the following note in one line: " + "lorem ipsum " * 13}]}]

FULL = {"duration": 8.0, "threads": (4, 16, 64, 256), "tpm": 600_000.0, "burst_s": 5.0, "service_ms": 100.0,
        "max_tokens": 400, "output_tokens": 100, "deadline": 20.0}
SMOKE = {"duration": 1.0, "threads": (4,), "tpm": 60_000.0, "burst_s": 2.0, "service_ms": 5.0,
         "max_tokens": 100, "output_tokens": 20, "deadline": 5.0}


def modes(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    specs = {
        "botocore adaptive": {"retry_mode": "adaptive", "hooks": None},
        "bedrock-hooks, rate limiter off": {"retry_mode": None, "hooks": {"rate_limit": False}},
        "bedrock-hooks": {"retry_mode": None, "hooks": {"rate_limit": True}},
    }
    if "quotas" in hooks_available_options():
        specs["bedrock-hooks + BEDROCK_HOOKS_QUOTAS"] = {
            "retry_mode": None, "hooks": {"rate_limit": True, "quotas": f"{MODEL}={p['tpm']:.0f}/min"}}
    return specs


def _call(max_tokens: int) -> Any:
    def call(client: Any) -> Any:
        return client.converse(modelId=MODEL, messages=PROMPT, inferenceConfig={"maxTokens": max_tokens})
    return call


def _one(server: ServerProcess, spec: dict[str, Any], p: dict[str, Any], threads: int) -> dict[str, Any]:
    quota = {"model": MODEL, "tokens_per_minute": p["tpm"], "burst": p["tpm"] / 60.0 * p["burst_s"],
             "output_tokens": int(p["output_tokens"])}
    server.scenario("ok", service_ms=p["service_ms"], quotas=[quota])
    clients = build_clients(spec, server.url, threads, shared=False, hook_overrides={"retry_deadline": p["deadline"]})
    window: dict[str, Any] = {}
    timer = threading.Timer(p["duration"], lambda: window.update(server.stats()["quota"].get(MODEL, {})))
    try:
        timer.start()  # the quota's counters when the storm's time is up (calls then finishing are the tail)
        result = run_load(clients, p["duration"], p["deadline"], _call(int(p["max_tokens"])))
    finally:
        timer.join()
        release_clients(clients)
        gc.collect()  # hundreds of clients: their teardown must not land in the next mode's run
    stats = server.stats()["quota"].get(MODEL, {})
    possible = quota["burst"] + p["duration"] * p["tpm"] / 60.0
    result.update(
        admitted=stats.get("admitted", 0), throttled=stats.get("throttled", 0), settled=stats.get("settled", 0.0),
        calls_per_s=window.get("admitted", 0) / p["duration"],
        quota_share=window.get("settled", 0.0) / possible if possible else 0.0,
        throttles_per_success=stats.get("throttled", 0) / result["successes"] if result["successes"] else float("inf"),
    )
    time.sleep(1.0)
    return result


def run(*, smoke: bool = False, only: tuple[str, ...] = (), **overrides: Any) -> dict[str, Any]:
    p = dict(SMOKE if smoke else FULL)
    p.update({k: v for k, v in overrides.items() if v is not None})
    specs = modes(p)
    if only:
        specs = {name: spec for name, spec in specs.items() if name in only}
    results: dict[str, Any] = {"params": {**p, "threads": list(p["threads"])}, "runs": {}}
    with ServerProcess() as server:
        for i, threads in enumerate(p["threads"]):
            names = list(specs) if i % 2 == 0 else list(specs)[::-1]  # rotate: drift hits every mode alike
            runs = {name: _one(server, specs[name], p, int(threads)) for name in names}
            results["runs"][str(threads)] = {name: runs[name] for name in specs}
    return results


def table(results: dict[str, Any]) -> str:
    rows = []
    for threads, runs in results["runs"].items():
        for name, r in runs.items():
            rows.append([threads, name, f"{r['calls_per_s']:.1f}", f"{r['quota_share'] * 100:.0f}%",
                         f"{r['throttles_per_success']:.2f}", f"{r['p50_ms']:,.0f} ms", f"{r['p99_ms']:,.0f} ms",
                         f"{r['success_rate'] * 100:.1f}%"])
    return markdown_table(["threads", "mode", "goodput (calls/s)", "quota used", "429s / success", "p50", "p99",
                           "success rate"], rows, align="rlrrrrrr")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--duration", type=float)
    parser.add_argument("--threads", type=int, action="append")
    parser.add_argument("--tpm", type=float)
    parser.add_argument("--burst-s", type=float)
    parser.add_argument("--service-ms", type=float)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--output-tokens", type=int)
    parser.add_argument("--deadline", type=float)
    parser.add_argument("--mode", action="append", help="only this mode (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(smoke=args.smoke, only=tuple(args.mode or ()), duration=args.duration,
                  threads=tuple(args.threads) if args.threads else None, tpm=args.tpm, burst_s=args.burst_s,
                  service_ms=args.service_ms, max_tokens=args.max_tokens, output_tokens=args.output_tokens,
                  deadline=args.deadline)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
        return 0
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
