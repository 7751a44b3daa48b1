"""The autouse fixture of the tests that touch process-wide state (import it into the test module).

Routers (circuits, remembered profiles) and rate-limiter buckets live for the whole process; each test
starts and ends with none, whatever the last uninstall does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bedrock_hooks import fallbacks, ratelimit


@pytest.fixture(autouse=True)
def fresh_shared_state() -> Iterator[None]:
    fallbacks.reset_routers()
    ratelimit.reset()
    yield
    fallbacks.reset_routers()
    ratelimit.reset()
