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
