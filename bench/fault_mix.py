"""Benchmark: a fault mix — 500s, 503s, 429s and TCP resets at random, at a set rate.

The server (own process) fails each request with probability ``--fault-rate`` (500
InternalServerException, 503 ServiceUnavailableException, 429 ThrottlingException or a TCP reset,
equally likely, seeded) and otherwise answers 200 after ``service_ms``. ``--threads`` threads call
Converse back to back for ``--duration`` seconds per mode (modes in rotating order); a call succeeds
when it returns within ``--deadline`` seconds. No quota here: a 429 is a random blip, so this shows
the cost of each mode's backoff where backing off buys nothing, next to its success rate.

A run of a few seconds is one sample of a noisy process (a 429 costs its thread a throttle backoff of
up to seconds; the machine is shared), so every mode runs ``--repeats`` times (order alternating,
server seed per repeat) and the report gives min / median / max over the repeats. :func:`summary`
states a difference between two modes only when their ranges do not overlap, and the limiter on/off
throughput ratio with its range per repeat and in how many runs the limiter engaged at all.

    python bench/fault_mix.py            # ~3 min (5 repeats)
    python bench/fault_mix.py --smoke    # seconds; numbers mean nothing

Importable: ``run(smoke=True)`` returns the result dict, ``table(result)`` the markdown table,
``summary(result)`` the claims that survive the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (ServerProcess, save_figure, build_clients, markdown_table, merge_runs, modes,  # noqa: E402
                     release_clients, run_load)

FULL = {"duration": 6.0, "threads": 8, "fault_rate": 0.2, "service_ms": 5.0, "deadline": 10.0, "repeats": 5,
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
                    result["limiter_engaged"] = _limiter_engaged()
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
    return {"params": p, "modes": {name: _summarise(r) for name, r in runs.items()}}


#: Per-run figures reported as min / median / max over the repeats.
SPREAD = ("success_rate", "calls", "attempts_per_success", "p50_ms", "p99_ms")


def _limiter_engaged() -> bool:
    """Whether any rate-limiter bucket of the process cut its rate during the run (before uninstall)."""
    from bedrock_hooks import ratelimit

    return any(bucket.reductions for bucket in ratelimit.buckets().values())


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    merged = dict(merge_runs(runs))
    merged["spread"] = {key: spread([r[key] for r in runs]) for key in SPREAD}
    merged["runs"] = runs
    merged["engaged_runs"] = sum(1 for r in runs if r.get("limiter_engaged"))
    return merged


def spread(values: list[float]) -> tuple[float, float, float]:
    """(min, median, max)."""
    return min(values), statistics.median(values), max(values)


def _range(values: tuple[float, float, float], fmt: str) -> str:
    low, mid, high = values
    return fmt.format(mid) if low == high else f"{fmt.format(mid)} ({fmt.format(low)}–{fmt.format(high)})"


def table(results: dict[str, Any]) -> str:
    rows = []
    for name, r in results["modes"].items():
        s = r["spread"]
        failures = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()) if k != "ok") or "-"
        rows.append([name, _range(tuple(x * 100 for x in s["success_rate"]), "{:.2f}%"), _range(s["calls"], "{:,.0f}"),
                     _range(s["attempts_per_success"], "{:.2f}"), _range(s["p50_ms"], "{:,.0f} ms"),
                     _range(s["p99_ms"], "{:,.0f} ms"), f"{r['max_ms']:,.0f} ms", failures])
    return markdown_table(["mode", "success rate", "calls per run", "requests / success", "p50", "p99", "max",
                           "failed calls (all runs)"], rows, "lrrrrrrl")


def _ratio_spread(results: dict[str, Any], on: str, off: str) -> tuple[float, float, float] | None:
    modes = results["modes"]
    if on not in modes or off not in modes:
        return None
    pairs = zip(modes[on]["runs"], modes[off]["runs"])
    return spread([a["calls"] / b["calls"] for a, b in pairs if b["calls"]])


def _compare(results: dict[str, Any], key: str, higher_is_better: bool, label: str, fmt: str) -> list[str]:
    """bedrock-hooks vs each other mode on ``key``: a claim only where the ranges do not overlap."""
    modes = results["modes"]
    ours = modes.get("bedrock-hooks")
    if ours is None:
        return []
    better, same = [], []
    for name, r in modes.items():
        if name == "bedrock-hooks":
            continue
        (lo, _, hi), (olo, _, ohi) = ours["spread"][key], r["spread"][key]
        if (lo > ohi) if higher_is_better else (hi < olo):
            better.append(name)
        elif not ((hi < olo) if higher_is_better else (lo > ohi)):
            same.append(name)
    lines = []
    if better:
        lines.append(f"- {label}: bedrock-hooks is better than {', '.join(better)} in every repeat "
                     f"(its worst run, {fmt.format(ours['spread'][key][0 if higher_is_better else 2])}, beats their best).")
    if same:
        lines.append(f"- {label}: the ranges of bedrock-hooks and {', '.join(same)} overlap: no difference is claimed.")
    return lines


def summary(results: dict[str, Any]) -> str:
    """What survives the repeats, in words."""
    n = int(results["params"]["repeats"])
    lines = [f"Over {n} repeat(s) per mode (min / median / max):"]
    lines += _compare(results, "success_rate", True, "success rate", "{:.2%}")
    lines += _compare(results, "calls", True, "calls completed per run", "{:,.0f}")
    ratio = _ratio_spread(results, "bedrock-hooks", "bedrock-hooks, rate limiter off")
    if ratio is not None:
        engaged = results["modes"]["bedrock-hooks"]["engaged_runs"]
        if engaged == 0:
            verdict = ("it paced no send in any run, so pacing explains none of this range; no throughput claim "
                       "is made either way")
        elif ratio[0] <= 1.0 <= ratio[2]:
            verdict = "no throughput difference between limiter on and off survives the repeats"
        else:
            verdict = f"{'fewer' if ratio[2] < 1.0 else 'more'} calls with the limiter on in every repeat"
        lines.append(f"- rate limiter on vs off, calls per run: ratio {ratio[1]:.2f} (per repeat {ratio[0]:.2f}–"
                     f"{ratio[2]:.2f}); the limiter engaged in {engaged} of {n} run(s): {verdict}.")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path, plt: Any) -> Path:
    data = results["modes"]
    names = list(data)
    labels = [n.replace("bedrock-hooks + ", "bedrock-hooks\n+ ").replace("botocore ", "botocore\n") for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))

    def bars(ax: Any, xs: Any, key: str, scale: float, width: float, **kw: Any) -> None:
        low, mid, high = zip(*(tuple(v * scale for v in data[n]["spread"][key]) for n in names))
        ax.bar(xs, mid, width, yerr=[[m - lo for m, lo in zip(mid, low)], [h - m for m, h in zip(mid, high)]],
               capsize=3, **kw)

    xs = list(range(len(names)))
    bars(axes[0], xs, "success_rate", 100, 0.8, color="#2a7")
    axes[0].set_ylim(min(data[n]["spread"]["success_rate"][0] * 100 for n in names) - 2, 100.5)
    axes[0].set_title("calls succeeding within the deadline (%, median, min–max)")
    bars(axes[1], [x - 0.2 for x in xs], "p50_ms", 1, 0.4, label="p50")
    bars(axes[1], [x + 0.2 for x in xs], "p99_ms", 1, 0.4, label="p99")
    axes[0].set_xticks(xs)
    axes[0].set_xticklabels(labels)
    axes[1].set_xticks(xs)
    axes[1].set_xticklabels(labels)
    axes[1].set_yscale("log")
    axes[1].set_title("call latency, ms (log; median, min–max over repeats)")
    axes[1].legend()
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    p = results["params"]
    fig.suptitle(f"Fault mix: {p['fault_rate'] * 100:g}% of requests fail (500/503/429/reset), {p['threads']} threads, "
                 f"{p['repeats']} repeats")
    return save_figure(fig, path, plt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--duration", type=float)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--fault-rate", type=float)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(smoke=args.smoke, duration=args.duration, threads=args.threads, fault_rate=args.fault_rate,
                  repeats=args.repeats)
    print(json.dumps(results, indent=2, default=str) if args.json else table(results) + "\n\n" + summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
