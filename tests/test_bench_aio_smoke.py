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


def test_run_all_keeps_the_fleet_section_it_does_not_rerun(tmp_path: Path) -> None:
    import run_all

    previous = tmp_path / "RESULTS.md"
    previous.write_text("# x\n\n## 6. Token\n\nsix\n\n" + run_all.FLEET_HEADING + "\n\nfleet rows\n\n![p](p.png)\n\n"
                        "## 8. Async\n\neight\n\n---\n\nfooter\n")
    kept = run_all._kept_section(previous, run_all.FLEET_HEADING)
    assert kept == run_all.FLEET_HEADING + "\n\nfleet rows\n\n![p](p.png)\n"
    missing = run_all._kept_section(tmp_path / "absent.md", run_all.FLEET_HEADING)
    assert missing.startswith(run_all.FLEET_HEADING) and "bench/fleet_storm.py" in missing
