"""The learned token pacing against Bedrock's quota model, on simulated time: a storm of 32 clients.

A discrete-event simulation (no sleeping, no threads): 32 clients call back to back through ONE pacing
state (as a fleet shares one in Redis) against :class:`bedrock_hooks.testing.quota.TokenQuota` on the
same simulated clock, with the fleet benchmark's request mix (bench/fleet_storm.py: prompts of
50-1,500 tokens, ``maxTokens`` 150-1,000 on 85 % of requests, unset (8,192 reserved) on the rest, 120
output tokens, answers after 30 ms, 429s at once). It is harsher than the benchmark: a throttled client
books its next request at once (no retry backoff), so the pacer's queue is always 32 deep and each rate
change takes effect only as the queue drains. It checks, past the learning transient, what the design
claims: the learned rate holds the quota (delivered >= 85 %) and its probing costs clearly fewer 429s
than CUBIC's convex growth (which overshot by half within seconds of regaining the level that held);
a told quota costs almost none.
"""

from __future__ import annotations

import heapq
import random

import pytest

from bedrock_hooks import pacing
from bedrock_hooks.ratelimit import TOKEN_CONFIG
from bedrock_hooks.testing.quota import TokenQuota

TPM = 960_000.0
BURST = 64_000.0  #: the benchmark's bucket: four seconds of quota
MAX_OUTPUT = 8192
OUTPUT = 120
SERVICE = 0.030
LEARNING = 5.0  #: seconds of learning transient excluded from the steady-state figures


def simulate(config: pacing.PacingConfig, seconds: float = 40.0, clients: int = 32, seed: int = 1
             ) -> dict[str, float]:
    rng = random.Random(seed)
    now = [0.0]
    quota = TokenQuota(TPM, burst=BURST, clock=lambda: now[0])
    state = pacing.new_state(0.0, config)
    events: list[tuple[float, int, str, int, tuple]] = []
    serial = 0
    counts = {"ok": 0, "throttled": 0, "delivered": 0.0}

    def push(at: float, kind: str, client: int, data: tuple = ()) -> None:
        nonlocal serial
        serial += 1
        heapq.heappush(events, (at, serial, kind, client, data))

    for client in range(clients):
        push(0.0, "ready", client)
    while events:
        at, _, kind, client, data = heapq.heappop(events)
        if at > seconds:
            break
        now[0] = at
        if kind == "ready":  # a new request: book its expected cost, wait for its slot
            prompt = rng.randint(50, 1500)
            max_tokens = rng.randint(150, 1000) if rng.random() >= 0.15 else MAX_OUTPUT
            cost = prompt + OUTPUT
            state, wait = pacing.reserve(state, cost, at, 20.0, config)
            push(at + wait, "send", client, (prompt, max_tokens, cost, at))
        elif kind == "send":
            prompt, max_tokens, cost, booked_at = data
            if quota.try_reserve(prompt + max_tokens):
                push(at + SERVICE, "ok", client, (prompt, max_tokens, cost, booked_at))
            else:
                push(at + 0.002, "throttled", client, (booked_at,))
        elif kind == "ok":
            prompt, max_tokens, cost, booked_at = data
            quota.settle(prompt + max_tokens, prompt + OUTPUT)
            state, _ = pacing.settle(state, 0.0, at, config)
            state, _ = pacing.observe(state, False, booked_at, at, config)
            if booked_at >= LEARNING:
                counts["ok"] += 1
                counts["delivered"] += prompt + OUTPUT
            push(at, "ready", client)
        else:  # throttled: the booking stands; the next attempt goes through the pacer again
            state, _ = pacing.observe(state, True, data[0], at, config)
            if data[0] >= LEARNING:
                counts["throttled"] += 1
            push(at, "ready", client)
    steady = seconds - LEARNING
    requests = counts["ok"] + counts["throttled"]
    return {"share_429": counts["throttled"] / requests, "utilisation": counts["delivered"] / (TPM / 60 * steady),
            "requests": requests, "rate": state["rate"]}


SEEDS = (1, 2, 3, 4, 5)


def test_the_learned_token_rate_holds_the_quota_with_fewer_429s_than_convex_probing():
    """Past the transient the learned rate delivers >= 85 % of the quota on every seed, and its linear
    probing (a lone 429 steps back) costs clearly fewer 429s than CUBIC's convex probing on the same
    storms. Measured when written (probe 3 %/s): 0.7-2.6 % of requests answered 429 by seed vs 16-20 %,
    86-94 % of the quota delivered."""
    probing = [simulate(TOKEN_CONFIG, seed=seed) for seed in SEEDS]
    convex = [simulate(TOKEN_CONFIG._replace(probe=0.0), seed=seed) for seed in SEEDS]
    assert all(r["requests"] > 500 for r in probing + convex)  # the storms really ran
    assert all(r["utilisation"] >= 0.85 for r in probing), probing
    mean = lambda rows: sum(r["share_429"] for r in rows) / len(rows)  # noqa: E731
    assert mean(probing) < 0.75 * mean(convex), (probing, convex)
    assert mean(probing) <= 0.05, probing


def test_a_told_quota_holds_it_with_few_429s():
    told = pacing.PacingConfig(fixed_rate=TPM / 60, burst=60.0)
    for seed in SEEDS[:2]:
        result = simulate(told, seed=seed)
        assert result["share_429"] <= 0.03 and result["utilisation"] >= 0.9, result
