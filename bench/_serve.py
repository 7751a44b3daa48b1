"""The loopback Bedrock server for the benchmarks, in its own process (driven by ``_common.ServerProcess``).

A server in the benchmark's own process would share its GIL with the client threads being
measured; here it gets its own interpreter. Control protocol: one JSON object per line on stdin,
one JSON answer per line on stdout (the first line announces the URL).

Scenarios (``{"cmd": "scenario", "name": ...}``; each resets the server and the counters):

* ``ok``: every request answered 200 (the generated Converse body);
* ``storm``: a shared token bucket of ``rate`` requests/s (``burst`` deep) admits requests, which are
  answered 200 after ``service_ms``; beyond the quota, 429 ThrottlingException at once (with ``model``,
  only that model's requests draw on the quota: Bedrock's quotas are per model);
* ``faults``: each request fails with probability ``fault_rate`` (500, 503, 429 or a TCP reset, equally
  likely; seeded), otherwise 200 after ``service_ms``.

Token quotas (Bedrock's tokens per minute per model, ``bedrock_hooks.testing.quota``) apply on top of
any scenario: ``--quota MODEL=TPM[,burst=N][,burndown=F][,max_output=N][,output_tokens=N]`` on the
command line (repeatable; ``MODEL`` may be an ``fnmatch`` pattern), re-applied after every scenario
reset, or ``"quotas": [{"model": ..., "tokens_per_minute": ..., ...}]`` in a scenario message, which
then replaces the command-line ones for that scenario.  An answer the scenario chose as 200 is then
still answered 429 ("Too many tokens") when its reservation does not fit.

``{"cmd": "stats"}`` answers ``{"requests": n, "outcomes": {"ok": n, "throttled": n, ...}, "quota":
{model: {"admitted": n, "throttled": n, "reserved": n, "settled": n, ...}}}``; ``outcomes`` are the
scenario's choices, the quota's own 429s are counted under ``quota``.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bedrock_hooks.testing import BedrockServer, RecordedRequest, Reply  # noqa: E402

FAULTS = {
    "500": Reply.internal_server(),
    "503": Reply.service_unavailable(),
    "429": Reply.throttling(),
    "reset": Reply.reset(),
}


class Scenario:
    def __init__(self, server: BedrockServer, name: str = "ok", rate: float = 50.0, burst: float = 10.0,
                 service_ms: float = 0.0, fault_rate: float = 0.2, seed: int = 1, model: str | None = None) -> None:
        self.server = server
        self.name = name
        self.rate, self.burst = float(rate), float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic()
        self.ok = Reply.delay(service_ms / 1000.0) if service_ms > 0 else Reply.ok()
        self.fault_rate = float(fault_rate)
        self.rng = random.Random(seed)
        self.model = model
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.requests = 0

    def __call__(self, request: RecordedRequest) -> Reply:  # runs under the server lock
        self.requests += 1
        if len(self.server._requests) > 2000:  # bound memory: nothing reads the recorded requests here
            del self.server._requests[:]
        if self.name == "storm" and self.model in (None, request.model_id):
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                self.outcomes["ok"] += 1
                return self.ok
            self.outcomes["throttled"] += 1
            return FAULTS["429"]
        if self.name == "faults" and self.rng.random() < self.fault_rate:
            kind = self.rng.choice(sorted(FAULTS))
            self.outcomes[kind] += 1
            return FAULTS[kind]
        self.outcomes["ok"] += 1
        return self.ok


#: ``--quota`` keys and their types (``server.quota()`` keyword arguments).
QUOTA_KEYS = {"burst": float, "burndown": float, "max_output": int, "output_tokens": int}


def parse_quota(spec: str) -> dict[str, Any]:
    """``MODEL=TPM[,key=value...]`` -> ``server.quota()`` arguments (``ArgumentTypeError`` when malformed)."""
    model, sep, rest = spec.partition("=")
    if not sep or not model:
        raise argparse.ArgumentTypeError(f"--quota needs MODEL=TOKENS_PER_MINUTE, got {spec!r}")
    tpm, *options = rest.split(",")
    quota: dict[str, Any] = {"model": model, "tokens_per_minute": float(tpm)}
    for option in options:
        key, _, value = option.partition("=")
        if key not in QUOTA_KEYS:
            raise argparse.ArgumentTypeError(f"unknown --quota key {key!r} (known: {', '.join(QUOTA_KEYS)})")
        quota[key] = QUOTA_KEYS[key](value)
    return quota


def apply_quotas(server: BedrockServer, quotas: list[dict[str, Any]]) -> None:
    for quota in quotas:
        server.quota(**quota)


def quota_stats(server: BedrockServer) -> dict[str, dict[str, Any]]:
    return {model: stats.as_dict() for model, stats in sorted(server.quota_stats().items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quota", action="append", default=[], type=parse_quota, metavar="MODEL=TPM[,k=v]",
                        help="a token quota: MODEL=TPM[,burst=N][,burndown=F][,max_output=N][,output_tokens=N]")
    args = parser.parse_args(argv)
    with BedrockServer(connection_timeout=120.0) as server:
        scenario = Scenario(server)
        server.handler = scenario
        apply_quotas(server, args.quota)
        print(json.dumps({"url": server.url}), flush=True)
        for line in sys.stdin:
            try:
                msg: dict[str, Any] = json.loads(line)
                cmd = msg.pop("cmd")
                if cmd == "scenario":
                    quotas = msg.pop("quotas", None)
                    server.reset()
                    scenario = Scenario(server, **msg)
                    server.handler = scenario
                    apply_quotas(server, args.quota if quotas is None else quotas)
                    answer: dict[str, Any] = {"ok": True}
                elif cmd == "stats":
                    with server._lock:
                        answer = {"requests": scenario.requests, "outcomes": dict(scenario.outcomes)}
                    answer["quota"] = quota_stats(server)
                elif cmd == "quit":
                    break
                else:
                    answer = {"error": f"unknown command {cmd!r}"}
            except Exception as exc:  # keep serving; the driver sees the error
                answer = {"error": repr(exc)}
            print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
