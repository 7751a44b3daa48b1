"""Run every benchmark and write bench/RESULTS.md (+ PNG plots when matplotlib is installed).

    python bench/run_all.py            # full sizes (~12 min on 2 cores); the fleet storm is separate: bench/fleet_storm.py
    python bench/run_all.py --smoke    # tiny sizes, seconds; writes bench/RESULTS-smoke.md

Every figure compares plain botocore and bedrock-hooks measured in the same run, interleaved.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
import aio_storm  # noqa: E402
import fault_mix  # noqa: E402
import overhead  # noqa: E402
import startup  # noqa: E402
import throttle_storm  # noqa: E402
import token_storm  # noqa: E402


def _idle_drop(smoke: bool) -> dict[str, Any]:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from netns import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        return {"skipped": reason}
    import idle_drop

    results = idle_drop.run(smoke=smoke)
    return {"results": results, "table": idle_drop.table(results)}


def _startup(smoke: bool) -> dict[str, Any]:
    """Startup as users get it: a fresh non-editable venv of this checkout (smoke: the running interpreter)."""
    runs = 3 if smoke else 30
    if smoke:
        return startup.measure(startup.Interpreter(sys.executable), runs)
    with tempfile.TemporaryDirectory(prefix="bedrock-hooks-startup-") as directory:
        return startup.measure(startup.Interpreter(startup.make_venv(Path(directory) / "venv")), runs)


def _startup_table(s: dict[str, Any]) -> str:
    return ("Each row: A vs B wall-clock medians of interleaved pairs, the pairs' range, CPU difference "
            "(`python bench/startup.py --make-venv DIR`).\n\n```\n" + startup.render(s) + "\n```")


def _aio_storm(smoke: bool) -> dict[str, Any]:
    try:
        import aiobotocore  # noqa: F401
    except ImportError:
        return {"skipped": "aiobotocore is not installed"}
    return aio_storm.run(smoke=smoke)


FLEET_HEADING = "## 7. Fleet storm (`bench/fleet_storm.py`)"


def _kept_section(out: Path, heading: str) -> str:
    """A section of the previous ``out`` that this script does not re-run (the fleet storm: minutes, a
    redis-server, several processes; ``python bench/fleet_storm.py`` rewrites it), carried over verbatim."""
    try:
        previous = out.read_text()
    except OSError:
        previous = ""
    start = previous.find(heading)
    if start < 0:
        return heading + "\n\nNot run by `run_all.py`: `python bench/fleet_storm.py` (needs `redis-server`; minutes).\n"
    body = previous[start + len(heading):]
    ends = [i for i in (body.find("\n## "), body.find("\n---\n")) if i >= 0]
    return heading + (body[:min(ends)] if ends else body).rstrip() + "\n"


def run(smoke: bool, out: Path, command: str) -> dict[str, Any]:
    plt = _common.try_pyplot()
    results: dict[str, Any] = {"machine": _common.machine(), "command": command, "smoke": smoke}
    steps = [("overhead", lambda: overhead.run(smoke=smoke)),
             ("startup", lambda: _startup(smoke)),
             ("idle_drop", lambda: _idle_drop(smoke)),
             ("throttle_storm", lambda: throttle_storm.run(smoke=smoke)),
             ("fault_mix", lambda: fault_mix.run(smoke=smoke)),
             ("token_storm", lambda: token_storm.run(smoke=smoke)),
             ("aio_storm", lambda: _aio_storm(smoke))]
    for name, step in steps:
        t0 = time.monotonic()
        print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = step()
        except Exception:
            results[name] = {"error": traceback.format_exc()}
        results.setdefault("durations_s", {})[name] = round(time.monotonic() - t0, 1)
    plots: dict[str, str] = {}
    if plt is not None:
        suffix = "-smoke" if smoke else ""
        for name, module in (("overhead", overhead), ("throttle_storm", throttle_storm), ("fault_mix", fault_mix)):
            if "error" not in results[name]:
                path = out.parent / f"{name}{suffix}.png"
                module.plot(results[name], path, plt)
                plots[name] = path.name
    results["plots"] = plots
    results["fleet_section"] = _kept_section(out, FLEET_HEADING)
    out.write_text(render(results))
    out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    return results


def _section(results: dict[str, Any], name: str, render_ok: Any) -> str:
    r = results[name]
    if "error" in r:
        return f"Failed:\n\n```\n{r['error']}\n```"
    text = render_ok(r)
    if name in results.get("plots", {}):
        text += f"\n\n![{name}]({results['plots'][name]})"
    return text


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = ["# bedrock-hooks benchmarks", "",
             ("**Smoke run: tiny sizes, the numbers mean nothing.**\n" if results["smoke"] else "") +
             f"Produced by `{results['command']}` on {m['date']}.", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}; Python {m['python']}, botocore {m['botocore']}, "
             f"boto3 {m['boto3']}, urllib3 {m['urllib3']}. The loopback server runs in its own process; plain and "
             "hooked runs are interleaved (order alternating) so machine noise hits both alike.", ""]

    lines += ["## 1. Success path overhead (`bench/overhead.py`)", "",
              _section(results, "overhead", overhead.table), ""]
    if "error" not in results["overhead"]:
        t = results["overhead"]["throughput"]
        lines += [f"Throughput ratio is total calls/s hooked over plain across {t['rounds']} interleaved rounds of "
                  f"{t['calls_per_round']} calls (the per-round range shows how noisy a shared 2-core machine is); "
                  "the client-CPU row is the same calls measured with `process_time`; the stubbed-HTTP and per-event "
                  "rows isolate the library's own cost from the network, as CPU time of the measuring thread "
                  "(targets: ratio >= 0.98, library cost under 10 µs per successful call).", ""]
    lines += ["## 2. Startup (`bench/startup.py`)", "", _section(results, "startup", _startup_table), ""]
    idle = results["idle_drop"]
    lines += ["## 3. Idle-connection drop (`bench/idle_drop.py`)", ""]
    if "skipped" in idle:
        lines += [f"Skipped: {idle['skipped']} (needs root, `ip` and `nft` for the network-namespace NAT emulation).", ""]
    else:
        lines += [_section(results, "idle_drop", lambda r: r["table"]), "",
                  "NAT emulation with conntrack forgetting idle flows after a few seconds (350 s in AWS), scaled "
                  "read_timeout; second call after the idle period vs a warm call.", ""]

    def storm(r: dict[str, Any]) -> str:
        p = r["params"]
        parts = [f"Server quota: token bucket {p['rate']:g} req/s (burst {p['burst']:g}), admitted requests take "
                 f"{p['service_ms']:g} ms, 429 ThrottlingException beyond; {p['threads']} threads call back to back for "
                 f"{p['duration']:g} s per mode and repeat ({p['repeats']}), per-call deadline {p['deadline']:g} s "
                 "(bedrock-hooks: `retry_deadline`). Every client uses its mode's default attempt count. "
                 "\"bedrock-hooks\" runs on a default (legacy-mode) client with the library's defaults (rate limiter on); "
                 "\"rate limiter off\" is the same with `BEDROCK_HOOKS_RATE_LIMIT=off` (before/after the limiter)."]
        for layout in r["layouts"]:
            parts += ["", f"**{layout} clients**", "", throttle_storm.table(r, layout)]
        return "\n".join(parts)

    lines += ["## 4. Throttling storm (`bench/throttle_storm.py`)", "", _section(results, "throttle_storm", storm), ""]

    def faults(r: dict[str, Any]) -> str:
        p = r["params"]
        return (f"{p['fault_rate'] * 100:g}% of requests fail at random (500, 503, 429, TCP reset equally likely), "
                f"{p['threads']} threads, {p['duration']:g} s per mode x {p['repeats']}, deadline {p['deadline']:g} s. "
                "p50/p99 over all calls.\n\n" + fault_mix.table(r) + "\n\n" + fault_mix.summary(r))

    lines += ["## 5. Fault mix (`bench/fault_mix.py`)", "", _section(results, "fault_mix", faults), ""]

    def tokens(r: dict[str, Any]) -> str:
        p = r["params"]
        return (f"Token quota on one model: {p['tpm']:,.0f} tokens/min, bucket {p['burst_s']:g} s deep; each Converse "
                f"reserves its prompt + maxTokens {p['max_tokens']} and settles to prompt + {p['output_tokens']} output "
                f"tokens after {p['service_ms']:g} ms; {p['duration']:g} s per mode and thread count, deadline "
                f"{p['deadline']:g} s, per-thread clients. Goodput and quota used are read when the time is up.\n\n"
                + token_storm.table(r))

    lines += ["## 6. Token quota storm (`bench/token_storm.py`)", "", _section(results, "token_storm", tokens), ""]
    lines += [results.get("fleet_section") or _kept_section(Path("/nonexistent"), FLEET_HEADING), ""]

    def aio(r: dict[str, Any]) -> str:
        if "skipped" in r:
            return f"Skipped: {r['skipped']}."
        p = r["params"]
        return (f"{p['tasks']:g} asyncio tasks on one aiobotocore client (pool {p['pool']:g}), {p['duration']:g} s per "
                f"mode x {p['repeats']:g}, quota {p['rate']:g} req/s (burst {p['burst']:g}, {p['service_ms']:g} ms per "
                f"answer), deadline {p['deadline']:g} s. Loop callback CPU: one event-loop callback (one task step); "
                "its maximum is a GC pause in every mode, the percentiles are what handlers add.\n\n"
                + aio_storm.table(r))

    lines += ["## 8. Async throttling storm (`bench/aio_storm.py`)", "", _section(results, "aio_storm", aio), ""]
    lines += ["---", "", "Durations (s): " + ", ".join(f"{k} {v}" for k, v in results["durations_s"].items()),
              "", "Raw numbers: `" + ("RESULTS-smoke.json" if results["smoke"] else "RESULTS.json") + "`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds); writes RESULTS-smoke.md")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or HERE / ("RESULTS-smoke.md" if args.smoke else "RESULTS.md")
    command = "python bench/run_all.py" + (" --smoke" if args.smoke else "")
    results = run(args.smoke, out, command)
    print(out.read_text())
    failed = [k for k in ("overhead", "startup", "throttle_storm", "fault_mix", "token_storm", "aio_storm")
              if "error" in results[k]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
