"""The async throttling-storm benchmark's smoke mode runs and produces numbers (no timing thresholds)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from _requires import require

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def test_aio_storm_smoke() -> None:
    require("aiobotocore", group="aio")
    import aio_storm

    modes = ("aiobotocore standard", "bedrock-hooks (standard client)")
    result = aio_storm.run(smoke=True, only=modes, duration=0.4)
    assert set(result["modes"]) == set(modes)
    for row in result["modes"].values():
        assert row["calls"] > 0 and row["requests"] >= row["successes"] and 0 <= row["success_rate"] <= 1
        assert math.isfinite(row["loop_stall_cpu_ms"]) and 0 < row["loop_stall_cpu_ms"] <= row["loop_stall_wall_ms"] + 1
    assert aio_storm.table(result).count("\n") == 1 + len(modes)
