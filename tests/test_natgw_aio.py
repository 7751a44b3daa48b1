"""Network-level proof for aiobotocore clients: the NAT gateway of ``test_natgw.py``, an aio client.

A real aiobotocore ``bedrock-runtime`` client (aiohttp underneath, aiobotocore's own connector settings)
calls through the masquerading gateway whose conntrack forgets a flow after 2 s idle (the emulated
350 s). Two ways a flow idles:

* **A pooled connection** (idle 3 s, then a call). aiobotocore's 12 s ``keepalive_timeout`` is longer
  than that idle, as a raised ``connector_args={"keepalive_timeout": ...}`` is longer than 350 s (the
  default 12 s is not: in production the stall needs such a setting). Plain aiobotocore (also with
  ``tcp_keepalive=True``, which aiohttp ignores) stalls for the whole ``read_timeout`` before its own
  retry on a new connection; bedrock-hooks keep-alive answers as fast as a warm call on the same
  connection; eviction alone (``pool_max_idle`` 1 s lowers the connector's limit) on a new one. With
  both off, the library's immediate reconnect retry is what is left (fast after a reset; after one read
  timeout for a silent drop).
* **A request in flight** whose answer takes 3 s (a long generation with ``read_timeout`` raised to
  match): every aiobotocore setting is affected. Plain, the answer is dropped by the gateway and the
  call fails at its read timeout; with keep-alive probes the flow survives and the answer arrives.
"""

from __future__ import annotations

from typing import Any

import pytest

from _requires import require
from test_natgw import CONNTRACK_TIMEOUT, FAST, IDLE, READ_TIMEOUT, SLOW, describe, gateway  # noqa: F401 (fixture)

SLOW_READ_TIMEOUT = SLOW + 1.5

RUNS = [("drop", s, False) for s in ("plain", "tcp_keepalive", "keepalive", "eviction", "reconnect")] + \
       [("rst", s, False) for s in ("plain", "keepalive", "reconnect")] + [("drop", s, True) for s in ("plain", "keepalive")]


def arguments(gateway: Any, mode: str, scenario: str, slow: bool) -> list[str]:  # noqa: F811
    timing = ["--idle", "0", "--slow", str(SLOW), "--attempts", "1", "--read-timeout", str(SLOW_READ_TIMEOUT)] \
        if slow else ["--idle", str(IDLE), "--read-timeout", str(READ_TIMEOUT)]
    return ["--aio", "--endpoint", gateway.url(mode), "--scenario", scenario, *timing, "--ka-idle", "1",
            "--ka-interval", "1", "--ka-count", "3", "--max-idle", str(CONNTRACK_TIMEOUT / 2)]


@pytest.fixture(scope="module")
def results(gateway) -> dict[tuple[str, str, bool], dict[str, Any]]:  # noqa: F811
    require("aiobotocore", group="aio")
    return dict(zip(RUNS, gateway.run_clients([arguments(gateway, *run) for run in RUNS], timeout=45)))


@pytest.mark.parametrize("scenario", ["plain", "tcp_keepalive"])
def test_without_the_library_an_idle_aio_connection_stalls_until_the_read_timeout(results, scenario):
    result = results[("drop", scenario, False)]
    assert result["error"] is None, describe(result)
    assert result["second"] >= READ_TIMEOUT * 0.95, describe(result)
    assert not result["same_connection"] and result["retries"] >= 1, describe(result)


def test_keepalive_keeps_the_aio_flow_alive_and_the_connection_in_use(results):
    for mode in ("drop", "rst"):
        result = results[(mode, "keepalive", False)]
        assert result["error"] is None, describe(result)
        assert result["same_connection"] and result["retries"] == 0, describe(result)
        assert result["second"] < FAST, describe(result)


def test_eviction_alone_replaces_the_idle_aio_connection_before_use(results):
    result = results[("drop", "eviction", False)]
    assert result["error"] is None, describe(result)
    assert not result["same_connection"] and result["retries"] == 0, describe(result)
    assert result["second"] < FAST, describe(result)


def test_a_reset_costs_plain_aiobotocore_a_retry(results):
    plain = results[("rst", "plain", False)]
    assert plain["error"] is None and not plain["same_connection"] and plain["retries"] >= 1, describe(plain)


def test_with_both_off_the_reconnect_retry_is_left(results):
    reset, drop = results[("rst", "reconnect", False)], results[("drop", "reconnect", False)]
    assert reset["error"] is None and reset["retries"] == 1 and reset["second"] < FAST, describe(reset)
    assert drop["error"] is None and drop["retries"] == 1, describe(drop)  # after one read timeout, at once
    assert READ_TIMEOUT * 0.95 <= drop["second"] < READ_TIMEOUT + FAST, describe(drop)


def test_a_slow_answer_is_lost_without_keepalive_and_arrives_with_it(results):
    plain, hooked = results[("drop", "plain", True)], results[("drop", "keepalive", True)]
    assert plain["error"] is not None and "ReadTimeout" in plain["error"], describe(plain)
    assert hooked["error"] is None and hooked["same_connection"], describe(hooked)
    assert SLOW <= hooked["second"] < SLOW + FAST, describe(hooked)
