"""Benchmark: what bedrock-hooks costs on the success path.

1. **Throughput**: Converse calls/s of a plain boto3 ``bedrock-runtime`` client and of the same client
   with bedrock-hooks installed (defaults: keep-alive and eviction on), against the loopback server in
   its own process. Plain and hooked rounds are interleaved (order alternating); the figure is the
   median of the per-round ratios hooked/plain.
2. **Handler cost, network removed**: the same two clients with botocore's HTTP send replaced by a stub
   returning a canned 200, so a call is pure botocore CPU work; the difference per call is everything
   the library adds to a successful call through botocore's events.
3. **Per event**: every event of a successful call on which a feature of the library registers
   (``before-call``, ``before-sign``, ``before-send``, ``response-received``, ``needs-retry``,
   ``after-call``), emitted through each client's own event
   emitter with the arguments botocore passed them in a real call; the difference is the handlers'
   own cost, dispatch included. Measured twice: fresh, and after an inference profile was remembered
   for *another* model (routing state in the process must not cost this model anything).
4. **Connection pool hook**: urllib3's ``_get_conn``/``_put_conn`` pair on the client's real pool,
   plain pool class vs the library's idle-eviction subclass.
5. **Python function calls per stubbed call** (cProfile): plain vs hooked, fresh and with a remembered
   profile for another model — deterministic, so it shows a change the timings are too noisy to.
6. **OpenTelemetry** (when ``opentelemetry-sdk`` is installed): the stubbed successful call with
   ``BEDROCK_HOOKS_OTEL`` off vs on with an SDK MeterProvider recording (the success path calls no
   telemetry, so this is an A/A test in all but name), and the cost of one retry decision's telemetry
   (counter, histogram, span event on a recording span) with it off vs on.

Measurements 2-4 are this thread's CPU time (``time.thread_time``): the machine is shared, and time
spent waiting for a core belongs to nobody's overhead. The headline "library cost per successful
call" is the sum of the per-event differences and the pool hook (each measured in isolation,
interleaved, median of rounds); the stubbed whole call (2) is the same cost seen end to end, with
the noise of a ~400 µs call.

    python bench/overhead.py [--json]
    python bench/overhead.py --smoke      # seconds; numbers mean nothing

Importable: ``run(smoke=True)`` returns the result dict, ``table(result)`` the markdown.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ServerProcess, converse, save_figure, make_client, markdown_table, new_session  # noqa: E402

FULL = {"rounds": 60, "calls": 100, "stub_rounds": 25, "stub_calls": 1000, "emit_rounds": 15, "emit_calls": 20000}
SMOKE = {"rounds": 2, "calls": 10, "stub_rounds": 2, "stub_calls": 50, "emit_rounds": 2, "emit_calls": 200}

#: Timer of the in-process measurements (2-5): CPU time of this thread, so time spent waiting for a core
#: on a shared machine is not counted (cache and frequency effects still are).
CPU = time.thread_time
EVENTS = ("before-call", "before-sign", "before-send", "response-received", "needs-retry", "after-call")
CANNED = json.dumps({"output": {"message": {"role": "assistant", "content": [{"text": "Hello"}]}},
                     "stopReason": "end_turn", "usage": {"inputTokens": 5, "outputTokens": 3, "totalTokens": 8},
                     "metrics": {"latencyMs": 1}}).encode()
#: A model the stub answers "on-demand throughput isn't supported" for: one call makes the library
#: remember its inference profile, which is process-wide routing state.
OTHER_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ON_DEMAND = json.dumps({"message": f"Invocation of model ID {OTHER_MODEL} with on-demand throughput isn\u2019t "
                        "supported. Retry your request with the ID or ARN of an inference profile that contains "
                        "this model."}).encode()


def _pair(url: str) -> tuple[Any, Any]:
    """A plain client and a hooked one, each from its own session, same configuration."""
    import bedrock_hooks

    plain = make_client(new_session(), url)
    hooked = make_client(new_session(), url)
    bedrock_hooks.install(hooked)
    return plain, hooked


def _interleaved(plain_fn: Any, hooked_fn: Any, rounds: int,
                 timer: Any = time.perf_counter) -> tuple[list[float], list[float]]:
    """Per-round durations (s) of ``plain_fn()`` and ``hooked_fn()``, order alternating each round."""
    plain, hooked = [], []
    for r in range(rounds):
        pair = ((plain_fn, plain), (hooked_fn, hooked))
        for fn, out in (pair if r % 2 == 0 else pair[::-1]):
            gc.collect()
            t0 = timer()
            fn()
            out.append(timer() - t0)
    return plain, hooked


def _repeat(fn: Any, arg: Any, n: int) -> Any:
    def go() -> None:
        for _ in range(n):
            fn(arg)
    return go


# -- 1. loopback throughput -------------------------------------------------------------------------

def noise_floor(url: str, rounds: int, calls: int) -> float:
    """The same measurement with two *plain* clients (an A/A test): how far from 1.0 noise alone goes."""
    first, second = make_client(new_session(), url), make_client(new_session(), url)
    for client in (first, second):
        for _ in range(max(20, calls // 2)):
            converse(client)
    a, b = _interleaved(_repeat(converse, first, calls), _repeat(converse, second, calls), rounds)
    _release(first, second)
    return sum(a) / sum(b)


def throughput(url: str, rounds: int, calls: int) -> dict[str, Any]:
    """Calls/s over loopback, plain vs hooked, in interleaved rounds.

    The headline is the ratio of the totals (all calls of all rounds), which is what "calls per second"
    means; per-round ratios swing widely on a shared 2-core machine (the server runs on the same cores),
    so their range is reported too. The client's CPU time per call (``process_time``, not disturbed by
    the server's scheduling) is measured in a second pass as a steadier view of the same overhead.
    """
    plain, hooked = _pair(url)
    for client in (plain, hooked):  # warm: connections open, models loaded, caches filled
        for _ in range(max(20, calls // 2)):
            converse(client)
    p, h = _interleaved(_repeat(converse, plain, calls), _repeat(converse, hooked, calls), rounds)
    pc, hc = _interleaved(_repeat(converse, plain, calls), _repeat(converse, hooked, calls), rounds,
                          timer=time.process_time)
    ratios = [pp / hh for pp, hh in zip(p, h)]  # (calls/hh) / (calls/pp)
    plain_fc, hooked_fc = _function_calls(plain, calls), _function_calls(hooked, calls)
    _release(plain, hooked)
    return {"rounds": rounds, "calls_per_round": calls,
            "plain_calls_per_s": calls * rounds / sum(p), "hooked_calls_per_s": calls * rounds / sum(h),
            "ratio": sum(p) / sum(h), "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios),
            "plain_us_per_call": statistics.median(p) / calls * 1e6,
            "hooked_us_per_call": statistics.median(h) / calls * 1e6,
            "plain_cpu_us_per_call": sum(pc) / (calls * rounds) * 1e6,
            "hooked_cpu_us_per_call": sum(hc) / (calls * rounds) * 1e6,
            "cpu_ratio": sum(pc) / sum(hc),
            "plain_function_calls": plain_fc, "hooked_function_calls": hooked_fc,
            "function_call_ratio": plain_fc / hooked_fc}


def _function_calls(client: Any, calls: int) -> float:
    """Python function calls per Converse over real HTTP: a noise-free measure of the work per call."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        converse(client)
    profiler.disable()
    return pstats.Stats(profiler).total_calls / calls


# -- 2. stub HTTP layer -----------------------------------------------------------------------------

class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **kwargs: Any) -> Any:
        yield self.body


def _stub_send(request: Any) -> Any:
    from urllib.parse import quote

    from botocore.awsrequest import AWSResponse

    status, body, headers = 200, CANNED, {"Content-Type": "application/json"}
    if f"/model/{quote(OTHER_MODEL, safe='-_.~')}/" in request.url:
        status, body, headers = 400, ON_DEMAND, {"Content-Type": "application/json",
                                                 "x-amzn-ErrorType": "ValidationException"}
    headers.update({"x-amzn-RequestId": "bench-0000", "Content-Length": str(len(body)),
                    "Date": "Wed, 25 Nov 2026 15:00:00 GMT"})
    return AWSResponse(request.url, status, headers, _Raw(body))


def remember_a_profile_for_another_model(client: Any) -> bool:
    """One call of OTHER_MODEL: the library re-sends it on the ``us.`` profile and remembers it."""
    response = client.converse(modelId=OTHER_MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    return bool(response.get("BedrockHooks"))


def _stubbed_pair() -> tuple[Any, Any]:
    plain, hooked = _pair("https://bedrock-runtime.us-east-1.amazonaws.com")
    for client in (plain, hooked):
        client._endpoint.http_session.send = _stub_send
    return plain, hooked


def stub_cost(rounds: int, calls: int) -> dict[str, Any]:
    """The stubbed call, plain vs hooked, and the same method on two plain clients (A/A: its noise floor)."""
    plain, hooked = _stubbed_pair()
    other = _stubbed_pair()[0]
    for client in (plain, hooked, other):
        for _ in range(200):
            converse(client)
    p, h = _interleaved(_repeat(converse, plain, calls), _repeat(converse, hooked, calls), rounds, timer=CPU)
    a, b = _interleaved(_repeat(converse, plain, calls), _repeat(converse, other, calls), rounds, timer=CPU)
    deltas = [(hh - pp) / calls * 1e6 for pp, hh in zip(p, h)]
    aa = [(bb - aa_) / calls * 1e6 for aa_, bb in zip(a, b)]
    _release(plain, hooked, other)
    return {"rounds": rounds, "calls_per_round": calls,
            "plain_us_per_call": statistics.median(p) / calls * 1e6,
            "hooked_us_per_call": statistics.median(h) / calls * 1e6,
            "delta_us_median": statistics.median(deltas), "delta_us_p25": _quantile(deltas, 0.25),
            "delta_us_p75": _quantile(deltas, 0.75),
            "aa_delta_us_median": statistics.median(aa), "aa_delta_us_p25": _quantile(aa, 0.25),
            "aa_delta_us_p75": _quantile(aa, 0.75)}


# -- 3. per event -----------------------------------------------------------------------------------

def _captured_events(client: Any) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, kwargs) botocore emits for EVENTS during one successful (stubbed) call."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(event_name: str, **kwargs: Any) -> None:
        if not any(name[0] == event_name for name in seen):
            seen.append((event_name, dict(kwargs)))

    for event in EVENTS:
        client.meta.events.register_last(f"{event}.bedrock-runtime", record, unique_id=f"bench-record-{event}")
    converse(client)
    for event in EVENTS:
        client.meta.events.unregister(f"{event}.bedrock-runtime", record, unique_id=f"bench-record-{event}")
    return seen


def event_cost(rounds: int, calls: int, *, remembered_profile: bool = False) -> dict[str, Any]:
    plain, hooked = _stubbed_pair()
    out: dict[str, Any] = {"rounds": rounds, "emits_per_round": calls, "events": {},
                           "remembered_profile": remembered_profile and remember_a_profile_for_another_model(hooked)}
    captured = {"plain": dict(_captured_events(plain)), "hooked": dict(_captured_events(hooked))}
    total = 0.0
    for prefix in EVENTS:
        name = next((n for n in captured["plain"] if n.startswith(prefix + ".")), None)
        if name is None:
            continue
        fns = []
        for which, client in (("plain", plain), ("hooked", hooked)):
            emit, kwargs = client.meta.events.emit, captured[which][name]

            def go(emit: Any = emit, kwargs: dict[str, Any] = kwargs, name: str = name) -> None:
                for _ in range(calls):
                    emit(name, **kwargs)
            fns.append(go)
        p, h = _interleaved(fns[0], fns[1], rounds, timer=CPU)
        delta = statistics.median([(hh - pp) / calls * 1e6 for pp, hh in zip(p, h)])
        out["events"][prefix] = {"plain_us": statistics.median(p) / calls * 1e6,
                                 "hooked_us": statistics.median(h) / calls * 1e6, "delta_us": delta}
        total += delta
    out["total_delta_us"] = total
    _release(plain, hooked)
    return out


def stub_function_calls(calls: int) -> dict[str, Any]:
    """Python function calls per stubbed Converse: plain, hooked, hooked with another model's profile remembered."""
    plain, hooked = _stubbed_pair()
    for client in (plain, hooked):
        converse(client)
    out = {"plain": _function_calls(plain, calls), "hooked": _function_calls(hooked, calls)}
    remember_a_profile_for_another_model(hooked)
    out["hooked_with_remembered_profile"] = _function_calls(hooked, calls)
    _release(plain, hooked)
    return out


# -- 6. OpenTelemetry ------------------------------------------------------------------------------------

def otel_cost(rounds: int, calls: int) -> dict[str, Any] | None:
    """Success path with telemetry off vs on (SDK configured), and one decision's telemetry off vs on."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return None
    import bedrock_hooks
    from bedrock_hooks import telemetry
    from bedrock_hooks.classification import classify, facts_from_parts
    from bedrock_hooks.installation import attached_features
    from bedrock_hooks.policy import Reason, Verdict

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.use_meter_provider(provider)
    clients = []
    for otel in (False, True):
        client = make_client(new_session(), "https://bedrock-runtime.us-east-1.amazonaws.com")
        bedrock_hooks.install(client, otel=otel)
        client._endpoint.http_session.send = _stub_send
        for _ in range(200):
            converse(client)
        clients.append(client)
    off, on = clients
    p, h = _interleaved(_repeat(converse, off, calls), _repeat(converse, on, calls), rounds, timer=CPU)
    deltas = [(hh - pp) / calls * 1e6 for pp, hh in zip(p, h)]
    hooks = [next(f for f in attached_features(c) if hasattr(f, "policy")) for c in clients]
    facts = facts_from_parts(429, {"Error": {"Code": "ThrottlingException", "Message": "Too many requests"}}, {})
    classification, verdict = classify(facts), Verdict(True, 0.5, Reason.BACKOFF)
    tracer = TracerProvider().get_tracer("bench")

    def decide(feature: Any) -> Any:
        def go() -> None:
            with tracer.start_as_current_span("Bedrock Runtime.Converse"):
                for _ in range(calls):
                    telemetry.decision(feature, "Converse", classification, verdict, 1,
                                       model="anthropic.claude-3-haiku-20240307-v1:0")
        return go

    dp, dh = _interleaved(decide(hooks[0]), decide(hooks[1]), rounds, timer=CPU)
    recorded = sum(len(m.data.data_points) for r in reader.get_metrics_data().resource_metrics
                   for sc in r.scope_metrics for m in sc.metrics)
    telemetry.use_meter_provider(None)
    _release(*clients)
    del trace
    return {"rounds": rounds, "calls_per_round": calls,
            "off_us_per_call": statistics.median(p) / calls * 1e6, "on_us_per_call": statistics.median(h) / calls * 1e6,
            "success_delta_us_median": statistics.median(deltas), "success_delta_us_p25": _quantile(deltas, 0.25),
            "success_delta_us_p75": _quantile(deltas, 0.75),
            "decision_off_us": statistics.median(dp) / calls * 1e6, "decision_on_us": statistics.median(dh) / calls * 1e6,
            "points_recorded": recorded}


# -- 4. connection pool hook ------------------------------------------------------------------------

def pool_cost(url: str, rounds: int, calls: int) -> dict[str, Any]:
    plain, hooked = _pair(url)
    pools = []
    for client in (plain, hooked):
        converse(client)
        manager = client._endpoint.http_session._manager
        pools.append(next(iter(manager.pools._container.values())))

    def cycle(pool: Any) -> Any:
        def go() -> None:
            for _ in range(calls):
                pool._put_conn(pool._get_conn())
        return go

    p, h = _interleaved(cycle(pools[0]), cycle(pools[1]), rounds, timer=CPU)
    result = {"pool_class": type(pools[1]).__name__, "plain_us": statistics.median(p) / calls * 1e6,
              "hooked_us": statistics.median(h) / calls * 1e6,
              "delta_us": statistics.median([(hh - pp) / calls * 1e6 for pp, hh in zip(p, h)])}
    _release(plain, hooked)
    return result


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _release(*clients: Any) -> None:
    import bedrock_hooks

    for client in clients:
        bedrock_hooks.uninstall(client)
        getattr(client, "close", lambda: None)()


def run(*, smoke: bool = False) -> dict[str, Any]:
    p = SMOKE if smoke else FULL
    with ServerProcess() as server:
        server.scenario("ok")
        loop = throughput(server.url, p["rounds"], p["calls"])
        loop["aa_ratio"] = noise_floor(server.url, p["rounds"], p["calls"])
        pool = pool_cost(server.url, p["emit_rounds"], p["emit_calls"] // 4)
    stub = stub_cost(p["stub_rounds"], p["stub_calls"])
    events = event_cost(p["emit_rounds"], p["emit_calls"])
    routed = event_cost(p["emit_rounds"], p["emit_calls"], remembered_profile=True)
    functions = stub_function_calls(p["stub_calls"] // 10 or 1)
    otel = otel_cost(p["stub_rounds"], p["stub_calls"])
    return {"params": dict(p), "throughput": loop, "stub": stub, "events": events, "routed_events": routed,
            "pool": pool, "function_calls": functions, "otel": otel,
            "handler_cost_us": events["total_delta_us"] + pool["delta_us"],
            "handler_cost_routed_us": routed["total_delta_us"] + pool["delta_us"]}


def table(result: dict[str, Any]) -> str:
    t, s, e, pool = result["throughput"], result["stub"], result["events"], result["pool"]
    routed, fc = result["routed_events"], result["function_calls"]
    rows = [
        ["Converse over loopback HTTP (calls/s)", f"{t['plain_calls_per_s']:,.0f}", f"{t['hooked_calls_per_s']:,.0f}",
         f"ratio **{t['ratio']:.3f}** (per-round median {t['ratio_median']:.3f}, "
         f"range {t['ratio_min']:.3f}–{t['ratio_max']:.3f})"],
        ["A/A control: plain vs plain, same method (noise floor)", "", "", f"ratio {t.get('aa_ratio', float('nan')):.3f}"],
        ["client CPU per loopback call (µs)", f"{t['plain_cpu_us_per_call']:.0f}",
         f"{t['hooked_cpu_us_per_call']:.0f}", f"ratio {t['cpu_ratio']:.3f}"],
        ["Python function calls per loopback call (deterministic)", f"{t['plain_function_calls']:,.0f}",
         f"{t['hooked_function_calls']:,.0f}", f"ratio **{t['function_call_ratio']:.3f}**"],
        ["Converse, HTTP stubbed out (µs/call)", f"{s['plain_us_per_call']:.1f}", f"{s['hooked_us_per_call']:.1f}",
         f"+{s['delta_us_median']:.1f} µs (IQR {s['delta_us_p25']:.1f}–{s['delta_us_p75']:.1f})"],
        ["A/A control: the same, plain vs plain (noise floor)", "", "",
         f"{s.get('aa_delta_us_median', float('nan')):+.1f} µs (IQR {s.get('aa_delta_us_p25', float('nan')):.1f}–"
         f"{s.get('aa_delta_us_p75', float('nan')):.1f})"],
    ]
    for name, ev in e["events"].items():
        rows.append([f"emit `{name}` (µs)", f"{ev['plain_us']:.2f}", f"{ev['hooked_us']:.2f}", f"{ev['delta_us']:+.2f} µs"])
    rows.append(["pool `_get_conn`+`_put_conn` (µs)", f"{pool['plain_us']:.2f}", f"{pool['hooked_us']:.2f}",
                 f"{pool['delta_us']:+.2f} µs"])
    rows.append(["**library cost per successful call** (sum of the event rows + pool hook)", "", "",
                 f"**{result['handler_cost_us']:.1f} µs**"])
    before_call = routed["events"].get("before-call", {})
    rows.append(["... after another model's inference profile was remembered (sum; `before-call` row)", "",
                 f"{before_call.get('hooked_us', float('nan')):.2f}",
                 f"**{result['handler_cost_routed_us']:.1f} µs** ({before_call.get('delta_us', float('nan')):+.2f} µs)"])
    rows.append(["Python function calls per stubbed call (fresh / with another model's profile remembered)",
                 f"{fc['plain']:,.0f}", f"{fc['hooked']:,.0f} / {fc['hooked_with_remembered_profile']:,.0f}",
                 f"+{fc['hooked'] - fc['plain']:,.0f} / +{fc['hooked_with_remembered_profile'] - fc['plain']:,.0f}"])
    otel = result.get("otel")
    if otel:
        rows.append(["Converse, HTTP stubbed out, with bedrock-hooks: `BEDROCK_HOOKS_OTEL` off / on with the SDK "
                     "recording (µs/call)", f"{otel['off_us_per_call']:.1f}", f"{otel['on_us_per_call']:.1f}",
                     f"{otel['success_delta_us_median']:+.1f} µs (IQR {otel['success_delta_us_p25']:.1f}–"
                     f"{otel['success_delta_us_p75']:.1f})"])
        rows.append(["one retry decision's telemetry (log off; counter, histogram, span event): OTel off / on (µs)",
                     f"{otel['decision_off_us']:.2f}", f"{otel['decision_on_us']:.2f}",
                     f"{otel['decision_on_us'] - otel['decision_off_us']:+.2f} µs per decision"])
    return markdown_table(["measurement", "plain botocore", "with bedrock-hooks", "difference"], rows, "lrrr")


def plot(result: dict[str, Any], path: Path, plt: Any) -> Path:
    t, s = result["throughput"], result["stub"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].bar(["plain", "bedrock-hooks"], [t["plain_calls_per_s"], t["hooked_calls_per_s"]], color=["#888", "#2a7"])
    axes[0].set_title(f"loopback Converse calls/s (ratio {t['ratio']:.3f})")
    names = list(result["events"]["events"]) + ["pool hook"]
    deltas = [ev["delta_us"] for ev in result["events"]["events"].values()] + [result["pool"]["delta_us"]]
    axes[1].barh(names, deltas, color="#2a7")
    axes[1].axvline(0, color="#444", lw=0.8)
    axes[1].set_title(f"added cost per call, µs (stubbed call: +{s['delta_us_median']:.1f} µs)")
    return save_figure(fig, path, plt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(smoke=args.smoke)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
