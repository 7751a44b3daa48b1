"""Network-level proof: a NAT gateway that silently forgets idle flows (see ``netns.py``).

A real boto3 ``bedrock-runtime`` client in the client namespace calls a BedrockServer in the server
namespace through a masquerading gateway whose conntrack forgets a flow after 2 s idle (standing in
for the 350 s of NAT Gateways / VPC endpoints / NLBs). Each scenario idles 3 s and calls again:

* plain botocore (and ``Config(tcp_keepalive=True)``) stall for the whole ``read_timeout``;
* bedrock-hooks keep-alive (probes after 1 s, every 1 s) answers as fast as a warm call, on the
  same connection; eviction alone (max idle 1 s) too, on a new connection;
* with both off, only the immediate reconnect retry is left: after a TCP reset it is fast;
* an answer that takes longer than the gateway's timeout (a request in flight, ``read_timeout`` raised)
  is dropped on its way back without keep-alive (the call fails at its read timeout) and arrives with it.

All scenarios run in parallel in one emulation (about 8 s in total; the timings are those of
``bench/idle_drop.py --smoke``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from _requires import require_that
from netns import NatGateway, unavailable_reason

CONNTRACK_TIMEOUT = 2  # seconds: the emulated 350 s
IDLE = 3.0  # longer than the conntrack timeout
READ_TIMEOUT = 1.5
FAST = 0.5  # a second call under this did not stall (a stall costs READ_TIMEOUT)
SLOW = 3.0  # seconds the server takes to answer a call in flight (longer than the conntrack timeout)

RUNS = [("drop", s) for s in ("plain", "tcp_keepalive", "keepalive", "eviction", "reconnect")] + \
       [("rst", s) for s in ("plain", "keepalive", "reconnect")]
SLOW_RUNS = [("slow", s) for s in ("plain", "keepalive")]  # an answer in flight longer than the conntrack timeout


@pytest.fixture(scope="module")
def gateway() -> Iterator[NatGateway]:
    require_that(unavailable_reason(), group="natgw")
    with NatGateway(conntrack_timeout=CONNTRACK_TIMEOUT) as gw:
        yield gw


@pytest.fixture(scope="module")
def results(gateway: NatGateway) -> dict[tuple[str, str], dict[str, Any]]:
    runs = [["--endpoint", gateway.url(mode), "--scenario", scenario, "--idle", str(IDLE),
             "--read-timeout", str(READ_TIMEOUT), "--ka-idle", "1", "--ka-interval", "1", "--ka-count", "3",
             "--max-idle", str(CONNTRACK_TIMEOUT / 2)] for mode, scenario in RUNS]
    runs += [["--endpoint", gateway.url("drop"), "--scenario", scenario, "--idle", "0", "--slow", str(SLOW),
              "--attempts", "1", "--read-timeout", str(SLOW + 1.5), "--ka-idle", "1", "--ka-interval", "1",
              "--ka-count", "3"] for _, scenario in SLOW_RUNS]
    return dict(zip(RUNS + SLOW_RUNS, gateway.run_clients(runs, timeout=45)))


def describe(result: dict[str, Any]) -> str:
    return (f"{result['scenario']}@{result['endpoint']}: second call {result['second']:.3f}s "
            f"(warm {result['warm']:.3f}s), same connection={result['same_connection']}, "
            f"retries={result['retries']}, error={result['error']}")


@pytest.mark.parametrize("scenario", ["plain", "tcp_keepalive"])
def test_without_the_library_the_call_stalls_until_the_read_timeout(results, scenario):
    result = results[("drop", scenario)]
    assert result["error"] is None, describe(result)
    assert result["second"] >= READ_TIMEOUT * 0.95, describe(result)
    assert not result["same_connection"] and result["retries"] >= 1, describe(result)


def test_keepalive_keeps_the_flow_alive_and_the_connection_in_use(results):
    for mode in ("drop", "rst"):
        result = results[(mode, "keepalive")]
        assert result["error"] is None, describe(result)
        assert result["same_connection"] and result["retries"] == 0, describe(result)
        assert result["second"] < FAST, describe(result)


def test_eviction_alone_replaces_the_idle_connection_before_use(results):
    result = results[("drop", "eviction")]
    assert result["error"] is None, describe(result)
    assert not result["same_connection"] and result["retries"] == 0, describe(result)
    assert result["second"] < FAST, describe(result)


def test_reset_is_retried_at_once_on_a_new_connection(results):
    result = results[("rst", "reconnect")]
    assert result["error"] is None, describe(result)
    assert not result["same_connection"] and result["retries"] == 1, describe(result)
    assert result["second"] < FAST, describe(result)
    plain = results[("rst", "plain")]
    assert plain["error"] is None and not plain["same_connection"], describe(plain)


def test_silent_drop_without_defences_costs_one_read_timeout_then_retries_at_once(results):
    result = results[("drop", "reconnect")]
    assert result["error"] is None and result["retries"] == 1, describe(result)
    assert READ_TIMEOUT * 0.95 <= result["second"] < READ_TIMEOUT + FAST, describe(result)


def test_an_answer_slower_than_the_nat_timeout_arrives_only_with_keepalive(results):
    plain, hooked = results[("slow", "plain")], results[("slow", "keepalive")]
    assert plain["error"] is not None and "ReadTimeout" in plain["error"], describe(plain)
    assert hooked["error"] is None and hooked["same_connection"], describe(hooked)
    assert SLOW <= hooked["second"] < SLOW + FAST, describe(hooked)


def test_teardown_removes_namespaces_and_processes():
    require_that(unavailable_reason(), group="natgw")
    with NatGateway(conntrack_timeout=CONNTRACK_TIMEOUT) as gw:
        names = [gw.client_ns, gw.nat_ns, gw.server_ns]
        processes = list(gw._processes)
        assert processes and all(p.poll() is None for p in processes)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listed for name in names)
    assert all(p.poll() is not None for p in processes)
