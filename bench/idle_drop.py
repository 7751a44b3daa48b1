"""Benchmark: the first call after a NAT gateway silently forgot an idle connection.

Runs the network-namespace NAT emulation of ``tests/netns.py`` (root, ``ip`` and ``nft`` needed:
``apt-get install -y iproute2 nftables``) and, for each scenario, makes warm calls, idles past the
gateway's conntrack timeout and calls again. Prints a markdown table: the second call's latency and
its ratio to a warm call. Timeouts are scaled down (conntrack 3 s for the real 350 s, read_timeout
3 s for botocore's 60 s, keep-alive probes after 1 s), so a "stall" here costs 3 s, in production
the full read_timeout.

    sudo python bench/idle_drop.py            # full table, both gateway behaviours
    sudo python bench/idle_drop.py --serial   # one scenario at a time (~100 s), cleaner warm numbers
    sudo python bench/idle_drop.py --smoke    # seconds: plain vs keep-alive, silent drop only

Importable: ``run(smoke=True)`` returns the result dicts, ``table(results)`` the markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from netns import NatGateway, unavailable_reason  # noqa: E402  (shared with tests/test_natgw.py)

SCENARIOS: dict[str, str] = {
    "plain": "plain botocore",
    "tcp_keepalive": "botocore Config(tcp_keepalive=True)",
    "keepalive": "bedrock-hooks keep-alive",
    "eviction": "bedrock-hooks eviction only (keep-alive off)",
    "reconnect": "bedrock-hooks, keep-alive and eviction off",
}
MODES: dict[str, str] = {"drop": "silent drop", "rst": "TCP reset"}


def run(*, smoke: bool = False, modes: tuple[str, ...] = ("drop", "rst"), scenarios: tuple[str, ...] | None = None,
        conntrack_timeout: int = 3, idle: float = 5.0, read_timeout: float = 3.0,
        serial: bool = False) -> list[dict[str, Any]]:
    """Run every (mode, scenario) once; results in table order.

    Scenarios run as parallel client processes (fast), or one after another with ``serial`` (about
    10 s each, but warm-call latencies are not disturbed by the other processes).
    """
    if smoke:
        modes, scenarios = ("drop",), ("plain", "keepalive")
        conntrack_timeout, idle, read_timeout = 2, 3.0, 1.5
    scenarios = scenarios or tuple(SCENARIOS)
    pairs = [(mode, scenario) for mode in modes for scenario in scenarios]
    with NatGateway(conntrack_timeout=conntrack_timeout) as gateway:
        runs = [["--endpoint", gateway.url(mode), "--scenario", scenario, "--idle", str(idle), "--warm", "5",
                 "--read-timeout", str(read_timeout), "--ka-idle", "1", "--ka-interval", "1", "--ka-count", "3",
                 "--max-idle", str(conntrack_timeout / 2)] for mode, scenario in pairs]
        timeout = idle + 6 * read_timeout + 30
        if serial:
            results = [gateway.run_clients([one], timeout=timeout)[0] for one in runs]
        else:
            results = gateway.run_clients(runs, timeout=timeout)
    for (mode, _), result in zip(pairs, results):
        result["mode"] = mode
    return results


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table: scenario, gateway behaviour, second-call latency, ratio to a warm call."""
    lines = ["| scenario | idle flow | second call | warm call | ratio | connection |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for r in results:
        outcome = "error: " + r["error"].split(":")[0] if r["error"] else ("reused" if r["same_connection"] else "new")
        lines.append(f"| {SCENARIOS.get(r['scenario'], r['scenario'])} | {MODES.get(r['mode'], r['mode'])} "
                      f"| {r['second'] * 1000:,.0f} ms | {r['warm'] * 1000:.1f} ms | {_ratio(r['ratio'])} | {outcome} |")
    return "\n".join(lines)


def _ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run: plain vs keep-alive, silent drop only")
    parser.add_argument("--serial", action="store_true", help="one scenario at a time: cleaner warm latencies")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"cannot run the NAT emulation: {reason}", file=sys.stderr)
        return 2
    print(table(run(smoke=args.smoke, serial=args.serial)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
