"""Benchmark: a fault mix — 500s, 503s, 429s and TCP resets at random, at a set rate.

The server (own process) fails each request with probability ``--fault-rate`` (500
InternalServerException, 503 ServiceUnavailableException, 429 ThrottlingException or a TCP reset,
equally likely, seeded) and otherwise answers 200 after ``service_ms``. ``--threads`` threads call
Converse back to back for ``--duration`` seconds per mode (modes in rotating order); a call succeeds
when it returns within ``--deadline`` seconds. No quota here: a 429 is a random blip, so this shows
the cost of each mode's backoff where backing off buys nothing, next to its success rate.

    python bench/fault_mix.py            # ~1.5 min
    python bench/fault_mix.py --smoke    # seconds; numbers mean nothing

Importable: ``run(smoke=True)`` returns the result dict, ``table(result)`` the markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (ServerProcess, save_figure, build_clients, markdown_table, merge_runs, modes,  # noqa: E402
                     release_clients, run_load)

FULL = {"duration": 8.0, "threads": 8, "fault_rate": 0.2, "service_ms": 5.0, "deadline": 10.0, "repeats": 1,
        "seed": 7}
SMOKE = {"duration": 0.5, "threads": 2, "fault_rate": 0.1, "service_ms": 1.0, "deadline": 5.0, "repeats": 1,
         "seed": 7}


def run(*, smoke: bool = False, only: tuple[str, ...] = (), **overrides: Any) -> dict[str, Any]:
    p = dict(SMOKE if smoke else FULL)
    p.update({k: v for k, v in overrides.items() if v is not None})
    specs = {name: spec for name, spec in modes().items() if not only or name in only}
    names = list(specs)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with ServerProcess() as server:
        for rep in range(int(p["repeats"])):
            for name in (names if rep % 2 == 0 else names[::-1]):
                server.scenario("faults", fault_rate=p["fault_rate"], service_ms=p["service_ms"],
                                seed=int(p["seed"]) + rep)
                clients = build_clients(specs[name], server.url, int(p["threads"]), shared=False,
                                        hook_overrides={"retry_deadline": p["deadline"]})
                try:
                    result = run_load(clients, p["duration"], p["deadline"])
                finally:
                    release_clients(clients)
                stats = server.stats()
                result["requests"] = stats["requests"]
                result["server_outcomes"] = stats["outcomes"]
                result["wasted"] = stats["requests"] - stats["outcomes"].get("ok", 0)
                result["attempts_per_success"] = (stats["requests"] / result["successes"]
                                                  if result["successes"] else float("inf"))
                runs[name].append(result)
                time.sleep(0.2)
    return {"params": p, "modes": {name: merge_runs(r) for name, r in runs.items()}}


def table(results: dict[str, Any]) -> str:
    rows = []
    for name, r in results["modes"].items():
        failures = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()) if k != "ok") or "-"
        rows.append([name, f"{r['success_rate'] * 100:.2f}%", r["calls"], f"{r['attempts_per_success']:.2f}",
                     f"{r['p50_ms']:,.0f} ms", f"{r['p99_ms']:,.0f} ms", f"{r['max_ms']:,.0f} ms", failures])
    return markdown_table(["mode", "success rate", "calls", "requests / success", "p50", "p99", "max",
                           "failed calls"], rows, "lrrrrrrl")


def plot(results: dict[str, Any], path: Path, plt: Any) -> Path:
    data = results["modes"]
    names = list(data)
    labels = [n.replace("bedrock-hooks + ", "bedrock-hooks\n+ ").replace("botocore ", "botocore\n") for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    axes[0].bar(labels, [data[n]["success_rate"] * 100 for n in names], color="#2a7")
    axes[0].set_ylim(min(data[n]["success_rate"] * 100 for n in names) - 2, 100.5)
    axes[0].set_title("calls succeeding within the deadline (%)")
    xs = range(len(names))
    axes[1].bar([x - 0.2 for x in xs], [data[n]["p50_ms"] for n in names], 0.4, label="p50")
    axes[1].bar([x + 0.2 for x in xs], [data[n]["p99_ms"] for n in names], 0.4, label="p99")
    axes[1].set_xticks(list(xs))
    axes[1].set_xticklabels(labels)
    axes[1].set_yscale("log")
    axes[1].set_title("call latency, ms (log)")
    axes[1].legend()
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    p = results["params"]
    fig.suptitle(f"Fault mix: {p['fault_rate'] * 100:g}% of requests fail (500/503/429/reset), {p['threads']} threads")
    return save_figure(fig, path, plt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--duration", type=float)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--fault-rate", type=float)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(smoke=args.smoke, duration=args.duration, threads=args.threads, fault_rate=args.fault_rate)
    print(json.dumps(results, indent=2, default=str) if args.json else table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
