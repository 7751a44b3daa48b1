"""Every benchmark's smoke mode runs and produces numbers (no timing thresholds: CI machines vary)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import fault_mix  # noqa: E402
import overhead  # noqa: E402
import startup  # noqa: E402
import throttle_storm  # noqa: E402
import token_storm  # noqa: E402
from _requires import require_that  # noqa: E402
from netns import unavailable_reason  # noqa: E402


def _number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_overhead_smoke():
    result = overhead.run(smoke=True)
    assert _number(result["throughput"]["ratio_median"]) and result["throughput"]["plain_calls_per_s"] > 0
    assert _number(result["stub"]["delta_us_median"])
    assert set(result["events"]["events"]) == set(overhead.EVENTS)
    assert _number(result["handler_cost_us"])
    assert "library cost per successful call" in overhead.table(result)


def test_startup_smoke():
    result = startup.compare("pass", 2)
    assert result["plain_ms"] > 0 and result["bootstrap_ms"] > 0 and _number(result["ratio"])
    assert set(startup.in_process(1)) == {"import_ms", "install_ms"}


def test_throttle_storm_smoke():
    modes = ("botocore adaptive", "bedrock-hooks")
    result = throttle_storm.run(smoke=True, only=modes, duration=0.5)
    rows = result["layouts"]["per-thread"]
    assert set(rows) == set(modes)
    for row in rows.values():
        assert row["calls"] > 0 and row["requests"] >= row["successes"] and 0 <= row["success_rate"] <= 1
    assert throttle_storm.table(result, "per-thread").count("\n") == 1 + len(modes)


def test_token_storm_smoke():
    modes = ("botocore adaptive", "bedrock-hooks + BEDROCK_HOOKS_QUOTAS")
    result = token_storm.run(smoke=True, only=modes, duration=0.5)
    rows = result["runs"]["4"]
    assert set(rows) == set(modes)
    for row in rows.values():
        assert row["calls"] > 0 and row["admitted"] >= row["successes"] > 0 and 0 <= row["quota_share"] <= 1.5
    assert token_storm.table(result).count("\n") == 1 + len(modes)


def test_fault_mix_smoke():
    modes = ("botocore standard", "bedrock-hooks")
    result = fault_mix.run(smoke=True, only=modes)
    assert set(result["modes"]) == set(modes)
    for row in result["modes"].values():
        assert row["calls"] > 0 and _number(row["p99_ms"])
    assert fault_mix.table(result).count("\n") == 1 + len(modes)


def test_idle_drop_smoke():
    require_that(unavailable_reason(), group="natgw")
    import idle_drop

    results = idle_drop.run(smoke=True)
    assert {r["scenario"] for r in results} == {"plain", "keepalive"}
    assert all(_number(r["second"]) for r in results)
    assert "bedrock-hooks keep-alive" in idle_drop.table(results)


def test_fleet_storm_smoke():
    """Several real processes on one token quota, with and without a real redis-server (group redis)."""
    import shutil

    from _requires import require

    require("redis", group="redis")
    require_that(None if shutil.which("redis-server") else "the redis-server binary is not installed", group="redis")
    import fleet_storm

    modes = ("botocore adaptive", "bedrock-hooks memory://", "bedrock-hooks Redis")
    result = fleet_storm.run(smoke=True, scaling=False, idle=False, duration=0.5, only=modes)
    rows = result["storm"]
    assert [row["mode"] for row in rows] == list(modes)
    for row in rows:
        assert row["calls"] > 0 and row["processes"] == 2 and 0 <= row["throttled_share"] <= 1
        assert _number(row["goodput"]) and 0 <= row["fairness"] <= 1
    assert rows[2]["redis_commands_per_call"] > 0 and rows[1]["redis_commands_per_call"] == 0  # shared vs not
    assert fleet_storm.storm_table(rows).count("\n") == 1 + len(modes)
