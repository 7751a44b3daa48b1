"""The contract between the two halves of every store operation: the Python function (``memory://``) and
its Lua port (Redis) must agree, result for result and state for state, on any sequence of operations.

Random sequences (hypothesis) run through :class:`MemoryStore` and through :class:`RedisStore` on a real
``redis-server``; the Redis side is checked to have really answered (no silent in-process fallback).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bedrock_hooks import circuit, pacing_ops, store
from bedrock_hooks.pacing import NEVER, PacingConfig
from bedrock_hooks.quota_scope import QuotaScope
from _redis import _redis_session, redis_server  # noqa: F401  (fixtures)

_serial = itertools.count()

#: Pacing configurations: the default (learned rate), a fixed quota, one that engages on a few answers, probing ones.
CONFIGS = st.sampled_from([PacingConfig(), PacingConfig(fixed_rate=2000.0, burst=60.0),
                           PacingConfig(min_sample=3.0, min_observed=0.1, reset_after=2.0, window=0.5),
                           PacingConfig(burst=60.0, min_observed=0.3, probe=0.01),  # a token scope's (ratelimit)
                           PacingConfig(min_sample=3.0, min_observed=0.1, reset_after=2.0, window=0.5, probe=0.2)])
COSTS = st.floats(min_value=0.0, max_value=5000.0, allow_nan=False)


def with_config(head: st.SearchStrategy, config_strategy: st.SearchStrategy = CONFIGS) -> st.SearchStrategy:
    return st.tuples(head, config_strategy).map(lambda pair: (*pair[0], *pacing_ops.config_args(pair[1])))


#: (operation, its arguments' strategies): every operation of the store's contract. ``sent_back`` of observe
#: is turned into a send time before ``now`` (negative: never reserved) by the test.
OPERATIONS = {
    "pacing_reserve": (pacing_ops.RESERVE, with_config(st.tuples(COSTS, st.sampled_from([0.0, 1.0, 20.0,
                                                                                          float("inf")])))),
    "pacing_settle": (pacing_ops.SETTLE, with_config(st.tuples(st.floats(min_value=-5000.0, max_value=5000.0,
                                                                        allow_nan=False)))),
    "pacing_observe": (pacing_ops.OBSERVE, with_config(st.tuples(st.sampled_from([0.0, 1.0, 1.0]),
                                                                st.floats(min_value=-1.0, max_value=3.0)))),
    "circuit_pressure": (circuit.PRESSURE, st.tuples(st.sampled_from([1.0, 2.0, 3.0, 5.0]),
                                                     st.sampled_from([0.5, 5.0, 60.0]),
                                                     st.sampled_from([0.25, 1.0, 30.0]))),
    "circuit_status": (circuit.STATUS, st.just(())),
}

#: A family's state is only ever updated by that family's operations.
FAMILIES = {"circuit": ["circuit_pressure", "circuit_status"],
            "rate": ["pacing_reserve", "pacing_settle", "pacing_observe"]}


def family_steps(names: list[str]) -> st.SearchStrategy:
    return st.lists(st.tuples(st.sampled_from(names), st.floats(min_value=0.0, max_value=3.0, allow_nan=False),
                              st.data()), min_size=1, max_size=40)


steps = st.one_of(*(family_steps(names) for names in FAMILIES.values()))


def fleet_scope() -> QuotaScope:
    return QuotaScope("unsigned", "us-east-1", f"model:contract-{next(_serial)}", "https://x")


def redis_state(server, key: str) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in server.client().hgetall(key).items()}


@pytest.fixture
def pair(redis_server):  # noqa: F811
    return store.MemoryStore(), store.RedisStore(redis_server.url, timeout=2.0), redis_server


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=steps)
def test_python_and_lua_agree_on_any_sequence(pair, sequence):
    memory, redis_store, server = pair
    scope, now = fleet_scope(), 1_700_000_000.0
    for name, dt, data in sequence:
        op, arguments = OPERATIONS[name]
        args = data.draw(arguments)
        now += dt
        if name == "pacing_observe":
            args = (args[0], NEVER if args[1] < 0 else now - args[1], *args[2:])
        expected = memory.apply(op, "contract", scope, now, args, 3600.0)
        got = redis_store.apply(op, "contract", scope, now, args, 3600.0)
        assert got == expected, (name, args, now)
        assert redis_state(server, redis_store.key("contract", scope)) == \
            dict(memory.table("contract").entries.get(scope, (0, {}))[1])
    assert redis_store.failures == 0  # every step really ran on Redis


def test_keys_expire_and_readonly_operations_create_nothing(redis_server):  # noqa: F811
    redis_store = store.RedisStore(redis_server.url, timeout=2.0)
    scope = fleet_scope()
    key = redis_store.key(circuit.FAMILY, scope)
    assert redis_store.apply(circuit.STATUS, circuit.FAMILY, scope, 1.0, (), 90.0) == (0.0,)
    assert not redis_server.client().exists(key)
    redis_store.apply(circuit.PRESSURE, circuit.FAMILY, scope, 1.0, (5.0, 60.0, 30.0), 90.0)
    assert 0 < redis_server.client().pttl(key) <= 90_000
    redis_store.put_text("profile", scope, "us.m", 1.0, 86400.0)
    assert 0 < redis_server.client().pttl(redis_store.key("profile", scope)) <= 86_400_000
    assert redis_store.get_text("profile", scope, 2.0, 86400.0) == "us.m"
    redis_store.mark_hot(("m",), 100.0, 1.0)
    assert 0 < redis_server.client().pttl(store.HOT_KEY)
    assert redis_store.hot_models(1.0) == {"m": 100.0} and redis_store.hot_models(101.0) == {}
    assert redis_store.failures == 0


def test_python_and_lua_agree_through_a_storm_engaging_cutting_and_growing(pair):
    """A deterministic run through every branch random sequences may rarely reach: engage, cut, pace
    (waits > 0), grow back along CUBIC, disengage after ``reset_after``."""
    memory, redis_store, server = pair
    scope, now, config = fleet_scope(), 1_700_000_000.0, pacing_ops.config_args(PacingConfig())
    seen = {"wait": 0.0, "engaged": 0.0}

    def both(op, *args):
        expected = memory.apply(op, "rate", scope, now, args, 60.0)
        assert redis_store.apply(op, "rate", scope, now, args, 60.0) == expected, (op.name, args, now)
        return expected

    for i in range(400):
        cost = 500.0 + 300.0 * (i % 7)
        wait, _ = both(pacing_ops.RESERVE, cost, 20.0, *config)
        seen["wait"] = max(seen["wait"], wait)
        sent_at = now
        now += wait + 0.01
        throttled = 1.0 if (i < 150 and i % 3) or (200 <= i < 260) else 0.0
        if not throttled:
            both(pacing_ops.SETTLE, -0.5 * cost, *config)
        rate, engaged = both(pacing_ops.OBSERVE, throttled, sent_at, *config)
        seen["engaged"] = max(seen["engaged"], engaged)
    now += 30.0
    both(pacing_ops.RESERVE, 100.0, 20.0, *config)
    state = memory.table("rate").entries[scope][1]
    assert seen == {"wait": seen["wait"], "engaged": 1.0} and seen["wait"] > 0
    assert state["reductions"] >= 2 and state["engaged"] == 0.0  # cut more than once, then disengaged
    assert redis_state(server, redis_store.key("rate", scope)) == state
    assert redis_store.failures == 0
