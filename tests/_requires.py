"""Optional test dependencies that must not silently turn tests off in CI.

``require("aiobotocore", group="aio")`` imports and returns the module. Where it is missing the test is
skipped, unless ``BEDROCK_HOOKS_TEST_REQUIRE`` (a comma-separated list of groups, set by ``.ci/run`` in
the environment that installs them) names its group: then the missing module fails the test, so a
broken install step can never pass by skipping. ``require_that(reason, group=...)`` does the same for a
condition that is not a module (the NAT emulation needs root and nftables; the console scripts need the
package installed with its entry points on PATH).

``BEDROCK_HOOKS_TEST_*`` variables belong to the test harness, not to the library: conftest.py strips
every other ``BEDROCK_HOOKS_*`` variable so that no test sees a stray library setting, but keeps these.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

REQUIRE_VARIABLE = "BEDROCK_HOOKS_TEST_REQUIRE"


def required_groups() -> set[str]:
    return {g.strip() for g in os.environ.get(REQUIRE_VARIABLE, "").split(",") if g.strip()}


def is_required(group: str) -> bool:
    return group in required_groups() or "all" in required_groups()


def require_that(missing: str | None, *, group: str) -> None:
    """Nothing when ``missing`` is None; else skip the test, or fail it where ``group`` is required."""
    if missing is None:
        return
    if is_required(group):
        pytest.fail(f"required in this run ({REQUIRE_VARIABLE} names {group!r}) but unavailable: {missing}")
    pytest.skip(f"{missing} (group {group!r}; set {REQUIRE_VARIABLE} to require it)")


def require(module: str, *, group: str) -> ModuleType:
    """Import ``module`` for a test; skip when absent unless ``group`` is required in this run."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        require_that(f"{module} not installed: {exc}", group=group)
        raise  # unreachable: require_that skipped or failed
