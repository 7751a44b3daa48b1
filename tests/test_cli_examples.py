"""The example scripts show what the library adds in full: an error message is wrapped, never cut."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hooks_off_vs_on.py"


def load_example():
    spec = importlib.util.spec_from_file_location("hooks_off_vs_on", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # main() runs only as a script
    return module


def test_example_shows_whole_error_messages_wrapped():
    """Regression: the example printed only the first 110 characters of the message's last line."""
    example = load_example()
    botocore_line = ("An error occurred (ThrottlingException) when calling the Converse operation: Too many tokens "
                     "per day, please wait before trying again.")
    hint = ("[bedrock-hooks] DailyTokenQuotaExceeded (fail): The account's tokens-per-day quota for this model is "
            "exhausted; retrying before the day rolls over cannot succeed. Fix: Request a quota increase (Service "
            "Quotas console, 'tokens per day') or use another model or Region.")
    lines = example.wrapped(f"{botocore_line}\n{hint}", width=100)
    assert all(len(line) <= 100 for line in lines)
    assert " ".join(part.strip() for part in lines) == f"{botocore_line} {hint}"  # every word, in order
    assert example.wrapped("") == []  # a call that succeeded prints no message line


def test_otel_example_prints_the_metrics_of_a_throttled_then_successful_call():
    import os
    import subprocess
    import sys

    from _requires import require

    require("opentelemetry.sdk.metrics", group="otel")
    example = EXAMPLE.parent / "otel_metrics.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEDROCK_HOOKS_") or k.startswith("BEDROCK_HOOKS_TEST_")}
    done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "requests sent: 3" in out and "RetryAttempts: 2" in out
    assert "bedrock_hooks.decisions [{decision}] 2" in out
    assert "bedrock_hooks.wait.duration [s] count=2" in out
    assert "bedrock_hooks.calls [{call}] 1" in out and "bedrock_hooks.outcome = recovered" in out
    assert out.count("ThrottlingException -> retry in") == 2  # the INFO lines
