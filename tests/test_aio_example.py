"""The README's async example runs against the loopback server and shows what it claims."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from _requires import require

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "async_quickstart.py"


def test_the_async_example_runs_and_every_call_is_answered():
    require("aiobotocore", group="aio")
    spec = importlib.util.spec_from_file_location("async_quickstart", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # main runs only as a script
    outcome = example.run()
    assert outcome["answers"] == example.TASKS and outcome["requests"] == 2 * example.TASKS
    quota = outcome["daily_quota"]
    assert quota["requests"] == 1 and quota["entry"] == "DailyTokenQuotaExceeded"
    assert quota["hint"].startswith("[bedrock-hooks] DailyTokenQuotaExceeded (fail)")
