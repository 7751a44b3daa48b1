"""Optional test dependencies that must not silently turn tests off in CI.

``require("aiobotocore", group="aio")`` imports and returns the module. Where it is missing the test is
skipped, unless ``BEDROCK_HOOKS_TEST_REQUIRE`` (a comma-separated list of groups, set by ``.ci/run`` in
the environment that installs them) names its group: then the missing module fails the test, so a
broken install step can never pass by skipping.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def required_groups() -> set[str]:
    return {g.strip() for g in os.environ.get("BEDROCK_HOOKS_TEST_REQUIRE", "").split(",") if g.strip()}


def require(module: str, *, group: str) -> ModuleType:
    """Import ``module`` for a test; skip when absent unless ``group`` is required in this run."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if group in required_groups() or "all" in required_groups():
            pytest.fail(f"{module} is required in this run (BEDROCK_HOOKS_TEST_REQUIRE={group}) but missing: {exc}")
        pytest.skip(f"{module} not installed (group {group!r}; set BEDROCK_HOOKS_TEST_REQUIRE to require it)")
