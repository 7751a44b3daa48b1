"""Benchmark: a throttling storm — many threads against a shared request quota.

The server (own process) admits ``--rate`` requests/s through one token bucket shared by every
connection (``--burst`` deep) and answers 429 ThrottlingException beyond it, as Bedrock does for a
model's requests-per-minute quota. ``--threads`` worker threads call Converse back to back for
``--duration`` seconds; a call counts as a success when it returns within ``--deadline`` seconds
(bedrock-hooks is told the same deadline through ``retry_deadline``; botocore has no such knob).

Compared, in rotating order (each mode sees the same quota): botocore legacy, standard and adaptive
retry modes, and bedrock-hooks on a default (legacy-mode) client with and without its rate limiter.
Layouts: ``per-thread`` (each thread owns a client, as worker pools usually do) and ``shared`` (one
client for all threads; botocore's adaptive limiter is per client, so this is its best case).
``two-models``: the quota applies to one model only (Bedrock's quotas are per model); while the
``--threads`` threads storm it, ``free_threads`` more threads of the same process call another model
that has no quota pressure at all. Reported for that second model: what the storm costs it (a
process-wide limiter keyed by Region alone used to pace it too: 37 -> 4.8 calls/s).

Reported per mode: success rate, successes, requests the server received, wasted requests
(answered 429), requests per success, p50/p99 latency of all calls.

    python bench/throttle_storm.py            # ~4.5 min: all layouts
    python bench/throttle_storm.py --smoke    # seconds; numbers mean nothing

Importable: ``run(smoke=True)`` returns the result dict, ``table(result, layout)`` the markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (MESSAGES, MODEL, ServerProcess, save_figure, build_clients, converse,  # noqa: E402
                     markdown_table, merge_runs, modes, release_clients, run_load)

TWO_MODELS = "two-models"
FREE_MODEL = "amazon.nova-lite-v1:0"  #: the second model: no quota pressure on it
#: Modes compared in the two-models layout (botocore's own modes keep no process-wide state).
TWO_MODEL_MODES = ("botocore legacy", "bedrock-hooks, rate limiter off", "bedrock-hooks")

FULL = {"duration": 10.0, "threads": 16, "rate": 50.0, "burst": 10.0, "service_ms": 20.0, "deadline": 10.0,
        "free_threads": 4, "repeats": {"per-thread": 2, "shared": 1, TWO_MODELS: 1}}
SMOKE = {"duration": 1.0, "threads": 4, "rate": 20.0, "burst": 5.0, "service_ms": 5.0, "deadline": 3.0,
         "free_threads": 2, "repeats": {"per-thread": 1}}


def run(*, smoke: bool = False, layouts: tuple[str, ...] | None = None, only: tuple[str, ...] = (),
        **overrides: Any) -> dict[str, Any]:
    params = dict(SMOKE if smoke else FULL)
    params.update({k: v for k, v in overrides.items() if v is not None})
    repeats: dict[str, int] = dict(params.pop("repeats"))
    if layouts:
        repeats = {layout: repeats.get(layout, 1) for layout in layouts}
    mode_specs = modes()
    if only:
        mode_specs = {name: spec for name, spec in mode_specs.items() if name in only}
    results: dict[str, Any] = {"params": {**params, "repeats": repeats}, "layouts": {}}
    with ServerProcess() as server:
        for layout, count in repeats.items():
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in mode_specs}
            names = list(mode_specs)
            for rep in range(count):
                order = names if rep % 2 == 0 else names[::-1]  # rotate: drift hits every mode alike
                for name in order:
                    if layout == TWO_MODELS:
                        if name in TWO_MODEL_MODES:
                            runs[name].append(_two_models(server, mode_specs[name], params))
                    else:
                        runs[name].append(_one(server, mode_specs[name], params, shared=layout == "shared"))
            results["layouts"][layout] = {name: merge_runs(r) for name, r in runs.items() if r}
    return results


def _free_call(client: Any) -> Any:
    return client.converse(modelId=FREE_MODEL, messages=MESSAGES)


def _two_models(server: ServerProcess, spec: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """The storm on MODEL and, in the same process, ``free_threads`` threads on FREE_MODEL: the latter's figures."""
    server.scenario("storm", rate=p["rate"], burst=p["burst"], service_ms=p["service_ms"], model=MODEL)
    overrides = {"retry_deadline": p["deadline"]}
    stormed = build_clients(spec, server.url, int(p["threads"]), shared=False, hook_overrides=overrides)
    free = build_clients(spec, server.url, int(p["free_threads"]), shared=False, hook_overrides=overrides)
    out: dict[str, Any] = {}
    storm = threading.Thread(target=lambda: out.update(storm=run_load(stormed, p["duration"], p["deadline"], converse)))
    try:
        storm.start()
        result = run_load(free, p["duration"], p["deadline"], _free_call)
        storm.join()
    finally:
        release_clients(stormed + free)
    stats = server.stats()
    result["requests"] = stats["requests"] - stats["outcomes"].get("throttled", 0) - out["storm"]["successes"]
    result["wasted"] = 0  # the second model is never throttled
    result["attempts_per_success"] = result["requests"] / result["successes"] if result["successes"] else float("inf")
    result["calls_per_s"] = result["calls"] / result["wall_s"] if result["wall_s"] else 0.0
    result["storm_success_rate"] = out["storm"]["success_rate"]
    time.sleep(0.2)
    return result


def _one(server: ServerProcess, spec: dict[str, Any], p: dict[str, Any], *, shared: bool) -> dict[str, Any]:
    server.scenario("storm", rate=p["rate"], burst=p["burst"], service_ms=p["service_ms"])
    clients = build_clients(spec, server.url, int(p["threads"]), shared=shared,
                            hook_overrides={"retry_deadline": p["deadline"]})
    try:
        result = run_load(clients, p["duration"], p["deadline"])
    finally:
        release_clients(clients)
    stats = server.stats()
    result["requests"] = stats["requests"]
    result["server_outcomes"] = stats["outcomes"]
    result["wasted"] = stats["requests"] - stats["outcomes"].get("ok", 0)
    result["attempts_per_success"] = (stats["requests"] / result["successes"]) if result["successes"] else float("inf")
    time.sleep(0.2)
    return result


def table(results: dict[str, Any], layout: str) -> str:
    if layout == TWO_MODELS:
        return _two_models_table(results)
    rows = []
    for name, r in results["layouts"][layout].items():
        rows.append([name, f"{r['success_rate'] * 100:.1f}%", r["successes"], r["calls"], r["requests"], r["wasted"],
                     f"{r['attempts_per_success']:.2f}", f"{r['p50_ms']:,.0f} ms", f"{r['p99_ms']:,.0f} ms"])
    return markdown_table(["mode", "success rate", "successes", "calls", "requests sent", "wasted (429)",
                           "requests / success", "p50", "p99"], rows)


def _two_models_table(results: dict[str, Any]) -> str:
    p = results["params"]
    rows = [[name, f"{r['calls'] / r['wall_s']:.1f}" if r.get("wall_s") else "-", f"{r['success_rate'] * 100:.1f}%",
             f"{r['p50_ms']:,.0f} ms", f"{r['p99_ms']:,.0f} ms", f"{r['storm_success_rate'] * 100:.1f}%"]
            for name, r in results["layouts"][TWO_MODELS].items()]
    return (f"{p['threads']} threads storm `{MODEL}` (quota {p['rate']:g} req/s); {p['free_threads']} threads of the same "
            f"process call `{FREE_MODEL}`, which has no quota pressure. Figures of the second model:\n\n" +
            markdown_table(["mode", "second model: calls/s", "success rate", "p50", "p99",
                            "stormed model: success rate"], rows))


def plot(results: dict[str, Any], path: Path, plt: Any) -> Path:
    layouts = [layout for layout in results["layouts"] if layout != TWO_MODELS]  # other modes, other columns
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(1, len(layouts))
    for i, layout in enumerate(layouts):
        data = results["layouts"][layout]
        names = list(data)
        xs = [j + i * width for j in range(len(names))]
        axes[0].bar(xs, [data[n]["success_rate"] * 100 for n in names], width, label=layout)
        axes[1].bar(xs, [data[n]["attempts_per_success"] for n in names], width, label=layout)
    for ax, title in zip(axes, ("calls succeeding within the deadline (%)", "requests sent per success")):
        ax.set_xticks([j + width * (len(layouts) - 1) / 2 for j in range(len(names))])
        ax.set_xticklabels([n.replace("bedrock-hooks + ", "bedrock-hooks\n+ ") .replace("botocore ", "botocore\n")
                            for n in names], fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=8)
    p = results["params"]
    fig.suptitle(f"Throttling storm: {p['threads']} threads, quota {p['rate']:g} req/s, deadline {p['deadline']:g} s")
    return save_figure(fig, path, plt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--duration", type=float)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--deadline", type=float)
    parser.add_argument("--layout", action="append", choices=("per-thread", "shared", TWO_MODELS))
    parser.add_argument("--mode", action="append", help="only this mode (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(smoke=args.smoke, layouts=tuple(args.layout or ()) or None, only=tuple(args.mode or ()), duration=args.duration,
                  threads=args.threads, rate=args.rate, deadline=args.deadline)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
        return 0
    for layout in results["layouts"]:
        print(f"\n### {layout} clients\n")
        print(table(results, layout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
