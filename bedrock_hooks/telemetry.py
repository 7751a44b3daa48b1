"""What the library did, for operators: log records, OpenTelemetry metrics and span events, from one place.

The other modules call the small functions below at their decision points (one line each): a retry or
stop decision (:func:`decision`), a call's final failure (:func:`final_failure`) or recovery
(:func:`recovered`), a rate-limiter wait (:func:`waited`), a fallback move (:func:`fallback`), a
circuit opening (:func:`circuit_changed`), an evicted idle connection (:func:`connection_evicted`), a
re-issued stream (:func:`stream_reissued`). A successful call that nothing happened to calls none of
them: the success path pays nothing here.

* **Logs** (always; the ``bedrock_hooks.decisions`` logger): one INFO line per retry or stop decision,
  one WARNING per final failure the catalog knows, each a single readable line; the same facts as
  structured fields (``extra``: ``bedrock_hooks.entry``, ...) for JSON log pipelines. Never a
  credential, a prompt, a body, a request id, an account number.
* **Metrics** (when ``opentelemetry-api`` is importable and ``BEDROCK_HOOKS_OTEL`` is on): the
  instruments of :data:`INSTRUMENTS`, created on first use from
  ``opentelemetry.metrics.get_meter("bedrock_hooks", version)``. Before the application sets a
  MeterProvider, that is the API's proxy meter, whose instruments start recording into the real
  provider as soon as one is set: installing the library before configuring the SDK loses nothing
  afterwards. Without an SDK they are the API's no-ops.
* **Span events** on the span current during the call (OpenTelemetry's botocore instrumentation
  makes one per call): an event per decision and fallback, attributes on the final failure. The
  span is read from the context (``contextvars``), so threads and asyncio tasks see their own call's.

Attribute values have bounded cardinality: model IDs pass through :func:`model_attribute` (known
foundation-model and inference-profile forms are kept, ARNs lose their account number, and after
:data:`MAX_MODELS` distinct values everything new is ``other``); entries, decisions and reasons are
the catalog's and the policy's fixed words. Every call into OpenTelemetry goes through
:func:`~bedrock_hooks.failsafe.safe_invoke`: a broken SDK is reported once and never breaks a call.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import __version__, process
from .failsafe import report_failure, safe_invoke
from .quota_scope import model_in_path

logger = logging.getLogger("bedrock_hooks.decisions")

ENV = "BEDROCK_HOOKS_OTEL"
METER_NAME = "bedrock_hooks"
#: Distinct model attribute values kept per process; any further new model is reported as :data:`OTHER`.
MAX_MODELS = 100
OTHER = "other"
_MAX_MODEL_CHARS = 128

# -- attribute keys (metrics and span events) ---------------------------------------------------------
SERVICE = "rpc.service"  #: botocore's service name: ``bedrock-runtime``, ``bedrock``...
OPERATION = "rpc.method"  #: the API operation: ``Converse``, ``InvokeModel``...
MODEL = "gen_ai.request.model"  #: the model or inference profile, bounded (:func:`model_attribute`)
ENTRY = "bedrock_hooks.entry"  #: the catalog entry (``ThrottlingException``...), ``unknown`` if none
DECISION = "bedrock_hooks.decision"  #: the entry's decision: ``retry``, ``fix-and-retry``, ``wait``, ``fail``
REASON = "bedrock_hooks.reason"  #: the verdict's reason (``backoff``, ``max-attempts``...) or a move's reason
ACTION = "bedrock_hooks.action"  #: ``retry`` or ``stop``
OUTCOME = "bedrock_hooks.outcome"  #: ``recovered`` or ``failed``
WAIT_KIND = "bedrock_hooks.wait.kind"  #: ``backoff``, ``retry-after``, ``rate-limit``
FALLBACK_KIND = "bedrock_hooks.fallback.kind"  #: ``model``, ``inference-profile``, ``region``
FROM_MODEL, TO_MODEL = "bedrock_hooks.from_model", "bedrock_hooks.to_model"
FROM_REGION, TO_REGION = "bedrock_hooks.from_region", "bedrock_hooks.to_region"
REGION = "cloud.region"
STATE = "bedrock_hooks.circuit.state"  #: ``open``
# only on span events and the final failure's span attributes (not metric dimensions):
ATTEMPT = "bedrock_hooks.attempt"
WAIT_S = "bedrock_hooks.wait_s"
RETRYABLE = "bedrock_hooks.retryable"
RETRY_AFTER_S = "bedrock_hooks.retry_after_s"

_CALL = (SERVICE, OPERATION, MODEL)
_JUDGED = (*_CALL, ENTRY, DECISION, REASON)

#: Histogram bucket boundaries for waits, seconds (backoff caps at 20 s by default, 3600 s at most).
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0, 300.0)


@dataclass(frozen=True)
class Instrument:
    """One metric instrument, as data: docs/observability.md lists these and a test keeps them in step."""

    name: str
    kind: str  #: ``counter`` or ``histogram``
    unit: str  #: UCUM
    description: str
    attributes: tuple[str, ...]

    def create(self, meter: Any) -> Any:
        if self.kind == "counter":
            return meter.create_counter(self.name, unit=self.unit, description=self.description)
        try:  # advisory boundaries: opentelemetry-api 1.23+
            return meter.create_histogram(self.name, unit=self.unit, description=self.description,
                                          explicit_bucket_boundaries_advisory=list(WAIT_BUCKETS))
        except TypeError:
            return meter.create_histogram(self.name, unit=self.unit, description=self.description)


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("bedrock_hooks.decisions", "counter", "{decision}",
               "Retry decisions the library took on failed attempts (unary calls and streams): retry or stop.",
               (*_JUDGED, ACTION)),
    Instrument("bedrock_hooks.calls", "counter", "{call}",
               "Final outcome of calls the library decided about: recovered after a retry or move, or failed.",
               (*_JUDGED, OUTCOME)),
    Instrument("bedrock_hooks.wait.duration", "histogram", "s",
               "Time a call waited before its next attempt: backoff, a server's Retry-After, rate-limiter pacing.",
               (*_CALL, WAIT_KIND)),
    Instrument("bedrock_hooks.fallbacks", "counter", "{move}",
               "Calls moved to another model, inference profile or Region.",
               (SERVICE, OPERATION, FALLBACK_KIND, FROM_MODEL, TO_MODEL, FROM_REGION, TO_REGION, REASON)),
    Instrument("bedrock_hooks.circuit.changes", "counter", "{change}",
               "Circuit-breaker state changes (a model's circuit opening).",
               (MODEL, REGION, STATE, REASON)),
    Instrument("bedrock_hooks.rate_limit.engagements", "counter", "{engagement}",
               "Times the process-wide rate limiter started pacing a quota scope.", ()),
    Instrument("bedrock_hooks.connections.evicted", "counter", "{connection}",
               "Pooled connections closed before reuse because they sat idle longer than BEDROCK_HOOKS_POOL_MAX_IDLE.",
               (SERVICE,)),
    Instrument("bedrock_hooks.connections.reconnects", "counter", "{retry}",
               "Immediate retries on a fresh connection after a reset, closed connection, read timeout or cut answer.",
               (*_CALL, ENTRY)),
    Instrument("bedrock_hooks.streams.reissued", "counter", "{stream}",
               "Streams that failed before any content and were re-issued transparently.",
               (*_CALL, ENTRY)),
)

#: Span event names.
DECISION_EVENT = "bedrock_hooks.decision"
FALLBACK_EVENT = "bedrock_hooks.fallback"
REISSUE_EVENT = "bedrock_hooks.stream_reissued"
SPAN_EVENTS: Mapping[str, str] = {
    DECISION_EVENT: "a retry or stop decision on a failed attempt",
    FALLBACK_EVENT: "the call moved to another model, inference profile or Region",
    REISSUE_EVENT: "a stream that failed before any content was re-issued",
}

#: ``extra`` fields of the library's decision log records (the same facts as the line).
LOG_FIELDS: Mapping[str, str] = {
    "bedrock_hooks.event": "`decision` or `final_failure`",
    "bedrock_hooks.service": "botocore service name",
    "bedrock_hooks.operation": "API operation",
    "bedrock_hooks.model": "model ID (an ARN's account number replaced by `*`), or null",
    "bedrock_hooks.entry": "catalog entry, or the exception type for an error the catalog does not know",
    "bedrock_hooks.decision": "the entry's decision (`retry`, `fix-and-retry`, `wait`, `fail`)",
    "bedrock_hooks.reason": "why: the verdict's reason (`backoff`, `max-attempts`, ...) or `stopped_because`",
    "bedrock_hooks.action": "`retry` or `stop` (decisions only)",
    "bedrock_hooks.attempt": "the attempt that failed, first is 1 (final failure: attempts made)",
    "bedrock_hooks.max_attempts": "attempts allowed for this entry (decisions only)",
    "bedrock_hooks.wait_s": "seconds slept before the retry; for a final failure, the stated `retry_after` or null",
}


# -- the switch and the sink ----------------------------------------------------------------------------

class _Sink:
    """The created instruments and the trace API: made once, on the first event while telemetry is on."""

    def __init__(self, metrics: Any, trace: Any, provider: Any = None) -> None:
        meter = (provider.get_meter(METER_NAME, __version__) if provider is not None
                 else metrics.get_meter(METER_NAME, __version__))
        self.instruments = {spec.name: spec.create(meter) for spec in INSTRUMENTS}
        self.trace = trace

    def add(self, name: str, attributes: Mapping[str, Any], value: float = 1) -> None:
        self.instruments[name].add(value, attributes)

    def record(self, name: str, value: float, attributes: Mapping[str, Any]) -> None:
        self.instruments[name].record(value, attributes)

    def span(self, span: Any = None) -> Any:
        """The given span, else the current one, if it is recording (an ended span takes no more events)."""
        current = span if span is not None else self.trace.get_current_span()
        return current if current.is_recording() else None


_UNRESOLVED: Any = object()
_sink: Any = _UNRESOLVED
#: Held while OpenTelemetry is imported and the instruments made; taken before a fork (``consistent``), so a
#: child is never forked in the middle of that import: it would inherit the import's module locks held
#: by a thread it does not have, and hang on its own first event.
_sink_lock = process.lock(consistent=True)
_provider: Any = None


def use_meter_provider(provider: Any = None) -> None:
    """Record into ``provider`` instead of the global MeterProvider (``None``: the global one again).

    For applications that keep a MeterProvider of their own rather than setting the global one, and
    for tests; instruments are created again on the next event.
    """
    global _sink, _provider
    with _sink_lock:
        _provider, _sink = provider, _UNRESOLVED


def _env_on() -> bool:
    from .config import ConfigError, parse_bool

    try:
        return parse_bool(os.environ.get(ENV, "on"))
    except ConfigError:
        return True  # config.load_settings warns about the value (it parses the same variable)


def enabled(settings: Any = None) -> bool:
    """Whether OpenTelemetry data is wanted: the settings' ``otel`` (process-wide events: the variable)."""
    value = getattr(settings, "otel", None)
    return _env_on() if value is None else bool(value)


def _otel(settings: Any) -> _Sink | None:
    """The sink when telemetry is on and ``opentelemetry`` importable (imported here, at the first event)."""
    if not enabled(settings):
        return None
    sink = _sink
    return _resolve() if sink is _UNRESOLVED else sink


def prepare(settings: Any) -> None:
    """Import OpenTelemetry and make the instruments now, if telemetry is on: called when an async client is
    attached, so that an event loop never pays the import (about 8 ms, once) inside its first retry decision."""
    _otel(settings)


def _resolve() -> _Sink | None:
    global _sink
    with _sink_lock:
        if _sink is _UNRESOLVED:
            try:
                from opentelemetry import metrics, trace
            except ImportError:
                _sink = None
            except Exception as exc:  # a broken install: as if absent
                report_failure("telemetry import", exc)
                _sink = None
            else:
                _sink = safe_invoke("telemetry setup", _Sink, metrics, trace, _provider)
        return _sink


def _emit(settings: Any, work: Any, *args: Any) -> None:
    """Run ``work(sink, *args)`` if telemetry is on; any failure is reported once, never raised."""
    sink = _otel(settings)
    if sink is not None:
        safe_invoke("telemetry", work, sink, *args)


# -- bounded attribute values -----------------------------------------------------------------------------

#: A foundation model or system-defined inference profile ID: ``[geo.]provider.name[:version]...``.
_MODEL_FORM = re.compile(r"(?:(?:us|us-gov|eu|apac|ca|jp|au|global)\.)?[a-z0-9][a-z0-9-]*\.[a-z0-9][a-z0-9._:-]*")
#: ``arn:partition:bedrock:region:account:resource-type/id``.
_ARN = re.compile(r"arn:[a-z-]+:bedrock:[a-z0-9-]*:(\d*):([a-z-]+)/(.*)")
_models: set[str] = set()
_models_lock = process.lock()


def model_attribute(model: str | None) -> str:
    """A model ID as a metric/span attribute value, of bounded cardinality.

    Kept: foundation-model and system inference-profile IDs (``anthropic.claude-3-haiku-20240307-v1:0``,
    ``us.anthropic...``), also inside an ARN (``inference-profile/us.anthropic...``: the account is
    dropped). ARNs of account-specific resources (application inference profiles, provisioned, custom
    or imported models) become their resource type, since their IDs are random. Anything else, and any
    new value once :data:`MAX_MODELS` are known, is :data:`OTHER`.
    """
    if not model:
        return "none"
    value = _model_form(str(model))
    if value == OTHER or value in _models:
        return value
    with _models_lock:
        if value in _models:
            return value
        if len(_models) >= MAX_MODELS:
            return OTHER
        _models.add(value)
    return value


def _model_form(model: str) -> str:
    if len(model) > _MAX_MODEL_CHARS:
        return OTHER
    arn = _ARN.fullmatch(model)
    if arn is None:
        return model if _MODEL_FORM.fullmatch(model) else OTHER
    resource, ident = arn.group(2), arn.group(3)
    if resource in ("foundation-model", "inference-profile") and _MODEL_FORM.fullmatch(ident):
        return ident if resource == "foundation-model" else f"{resource}/{ident}"
    return resource if re.fullmatch(r"[a-z-]{1,40}", resource) else OTHER


def safe_model(model: str | None) -> str | None:
    """A model ID for a log line: whole, except an ARN's account number (``*``), and at most 128 characters."""
    if not model:
        return None
    text = str(model)
    arn = _ARN.fullmatch(text)
    if arn is not None and arn.group(1):
        text = text[:arn.start(1)] + "*" + text[arn.end(1):]
    return text[:_MAX_MODEL_CHARS]


def _operation_name(operation: Any) -> str:
    return str(getattr(operation, "name", None) or operation or "unknown")


def _model_of(request: Any = None, model: str | None = None) -> str | None:
    """The model of a request dict (``url_path``) or a prepared request / response (``url``)."""
    if model is not None or request is None:
        return model
    path = request.get("url_path") if isinstance(request, dict) else None
    if path is None:
        url = request.get("url") if isinstance(request, dict) else getattr(request, "url", None)
        path = urlsplit(url).path if isinstance(url, str) else ""
    return model_in_path(path or "")


_CALL_KEY = "bedrock_hooks_telemetry_call"


def _remember_call(request: Any, operation: str, model: str | None) -> None:
    """Keep the call's operation and current model in its context, for its outcome (after-call and the
    success path have no request dict)."""
    context = request.get("context") if isinstance(request, dict) else None
    if isinstance(context, dict):
        context[_CALL_KEY] = (operation, model)


def _remembered(context: Any) -> tuple[str | None, str | None]:
    remembered = context.get(_CALL_KEY) if isinstance(context, dict) else None
    return remembered if isinstance(remembered, tuple) else (None, None)


# -- decisions -------------------------------------------------------------------------------------------------

def decision(feature: Any, operation: Any, classification: Any, verdict: Any, attempts: int, *,
             request: Any = None, model: str | None = None, span: Any = None, error: str | None = None) -> None:
    """A retry or stop decision on a failed attempt: the INFO line, the counters, the span event.

    ``feature`` is the deciding client feature (its ``settings``, ``service`` and ``policy``);
    ``classification`` is None for an error the catalog does not know (``error`` names its type);
    ``request`` is botocore's request dict (the model is read from its URL path) unless ``model`` is
    given; ``span`` is the call's span when it is not the current one (a stream read after its call).
    """
    try:
        model = _model_of(request, model)
        if operation is None:  # a decision taken back later (an async remedy that failed): the call's own
            operation = _remembered(request.get("context") if isinstance(request, dict) else None)[0]
        operation = _operation_name(operation)
        _remember_call(request, operation, model)
        entry = classification.entry if classification is not None else None
        limit = feature.policy.attempt_limit(entry) if entry is not None else None
        facts = {"service": feature.service, "operation": operation, "model": model,
                 "entry": entry.name if entry is not None else (error or "unknown"),
                 "decision": entry.decision.value if entry is not None else "unknown",
                 "reason": verdict.reason.value, "action": "retry" if verdict.retry else "stop",
                 "attempt": attempts, "max_attempts": limit, "wait_s": verdict.delay if verdict.retry else None}
        if logger.isEnabledFor(logging.INFO):
            logger.info(_decision_line(feature, operation, classification, verdict, attempts, facts),
                        extra=_extra("decision", facts))
    except Exception as exc:
        report_failure("telemetry", exc)
        return
    _emit(feature.settings, _record_decision, facts, span)


def _decision_line(feature: Any, operation: str, classification: Any, verdict: Any, attempts: int,
                   facts: dict[str, Any]) -> str:
    if classification is not None:
        return feature.policy.describe(operation, classification, verdict, attempts)
    return f"bedrock-hooks: {operation}: {facts['entry']} -> stop after attempt {attempts} ({verdict.reason.value})"


def _record_decision(sink: _Sink, facts: dict[str, Any], span: Any) -> None:
    attributes = _judged(facts)
    sink.add("bedrock_hooks.decisions", {**attributes, ACTION: facts["action"]})
    if facts["action"] == "retry":
        if facts["wait_s"]:
            sink.record("bedrock_hooks.wait.duration", facts["wait_s"],
                        {**_call(facts), WAIT_KIND: facts["reason"]})
        if facts["reason"] == "reconnect":
            sink.add("bedrock_hooks.connections.reconnects", {**_call(facts), ENTRY: facts["entry"]})
    current = sink.span(span)
    if current is not None:
        current.add_event(DECISION_EVENT, {**attributes, ACTION: facts["action"], ATTEMPT: facts["attempt"],
                                           WAIT_S: float(facts["wait_s"] or 0.0)})


def final_failure(feature: Any, operation: Any, info: Mapping[str, Any], *, context: Any = None,
                  http_response: Any = None, model: str | None = None, span: Any = None) -> None:
    """A call the catalog knows failed for good: one WARNING, the ``failed`` outcome, span attributes.

    ``info`` is the hint's ``BedrockHooks`` dict (entry, decision, attempts, stopped_because, retry_after).
    """
    try:
        if model is None:
            model = _remembered(context)[1] or _model_of(http_response)
        reason = info.get("stopped_because") or info.get("decision")
        facts = {"service": feature.service, "operation": _operation_name(operation), "model": model,
                 "entry": info.get("entry"), "decision": info.get("decision"), "reason": reason,
                 "attempt": info.get("attempts"), "wait_s": info.get("retry_after"),
                 "retryable": bool(info.get("retryable"))}
        if logger.isEnabledFor(logging.WARNING):
            logger.warning(_failure_line(facts), extra=_extra("final_failure", facts))
    except Exception as exc:
        report_failure("telemetry", exc)
        return
    _emit(feature.settings, _record_failure, facts, span)


def stream_failed(feature: Any, operation: Any, classification: Any, attempts: int, reason: Any,
                  model: str | None = None, span: Any = None) -> None:
    """A stream's failure reaches the application (:func:`final_failure` for an error read from a stream)."""
    entry = classification.entry
    info = {"entry": entry.name, "decision": entry.decision.value, "retryable": entry.retryable,
            "attempts": attempts, "retry_after": classification.retry_after,
            "stopped_because": str(getattr(reason, "value", reason))}
    final_failure(feature, operation, info, model=model, span=span)


def _failure_line(facts: dict[str, Any]) -> str:
    attempts = facts["attempt"]
    counted = f"after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else "after its attempts"
    wait = f"; retry after ~{facts['wait_s']:g}s" if isinstance(facts["wait_s"], (int, float)) else ""
    return (f"bedrock-hooks: {facts['operation']} failed: {facts['entry']} ({facts['decision']}) {counted}, "
            f"stopped by {facts['reason']}{wait}")


def _record_failure(sink: _Sink, facts: dict[str, Any], span: Any) -> None:
    attributes = _judged(facts)
    sink.add("bedrock_hooks.calls", {**attributes, OUTCOME: "failed"})
    current = sink.span(span)
    if current is not None:
        extra = {ATTEMPT: int(facts["attempt"] or 0), RETRYABLE: facts["retryable"]}
        if isinstance(facts["wait_s"], (int, float)):
            extra[RETRY_AFTER_S] = float(facts["wait_s"])
        current.set_attributes({**attributes, **extra})


def recovered(feature: Any, state: Any, operation: Any = None, http_response: Any = None,
              context: Any = None, model: str | None = None, entry: Any = None) -> None:
    """A call succeeded after the library decided about one of its failures: the ``recovered`` outcome.

    Called on a success only when the call has a state (some attempt failed): a call nothing happened
    to never gets here. Counted only when the last decision was the library's (``state.verdict``).
    """
    verdict = getattr(state, "verdict", None)
    if entry is None:
        entry = getattr(getattr(state, "classification", None), "entry", None)
    if verdict is None or entry is None:
        return
    if model is None or operation is None:
        remembered_operation, remembered_model = _remembered(context)
        operation = operation or remembered_operation
        model = model or remembered_model or _model_of(http_response)
    _emit(feature.settings, _record_recovered, feature.service, operation, model, entry, verdict)


def _record_recovered(sink: _Sink, service: str, operation: Any, model: str | None, entry: Any,
                      verdict: Any) -> None:
    sink.add("bedrock_hooks.calls", {SERVICE: service, OPERATION: _operation_name(operation),
                                     MODEL: model_attribute(model), ENTRY: entry.name,
                                     DECISION: entry.decision.value, REASON: verdict.reason.value,
                                     OUTCOME: "recovered"})


# -- waits, moves, connections, streams -----------------------------------------------------------------------

def waited(feature: Any, kind: str, seconds: float, *, request: Any = None, operation: Any = None,
           event_name: str | None = None) -> None:
    """A call waited ``seconds`` before sending (``kind``: ``rate-limit``; backoff is recorded by :func:`decision`)."""
    if seconds > 0:
        _emit(feature.settings, _record_wait, feature.service, kind, seconds, request, operation, event_name)


def _record_wait(sink: _Sink, service: str, kind: str, seconds: float, request: Any, operation: Any,
                 event_name: str | None) -> None:
    if operation is None and event_name:
        operation = event_name.rsplit(".", 1)[-1]
    sink.record("bedrock_hooks.wait.duration", float(seconds),
                {SERVICE: service, OPERATION: _operation_name(operation),
                 MODEL: model_attribute(_model_of(request)), WAIT_KIND: kind})


#: The last URL path segment of the operations fallbacks move -> the operation (``/model/{id}/converse``).
_ROUTED_OPERATIONS: Mapping[str, str] = {"converse": "Converse", "converse-stream": "ConverseStream",
                                         "invoke": "InvokeModel",
                                         "invoke-with-response-stream": "InvokeModelWithResponseStream"}


def fallback(feature: Any, from_model: str, to_model: str, from_region: str, to_region: str, reason: str,
             request: Any = None) -> None:
    """The call moved: another model, the Region's inference profile, or another Region (``request``:
    botocore's request dict or params, whose URL path names the operation)."""
    path = request.get("url_path") if isinstance(request, dict) else None
    operation = _ROUTED_OPERATIONS.get(str(path or "").rsplit("/", 1)[-1], "unknown")
    if from_region != to_region:
        kind = "region"
    elif "inference profile" in reason or reason == "InferenceProfileRequired":
        kind = "inference-profile"
    else:
        kind = "model"
    _emit(feature.settings, _record_fallback, {
        SERVICE: feature.service, OPERATION: _operation_name(operation), FALLBACK_KIND: kind,
        FROM_MODEL: from_model, TO_MODEL: to_model, FROM_REGION: from_region, TO_REGION: to_region,
        REASON: reason})


def _record_fallback(sink: _Sink, attributes: dict[str, Any]) -> None:
    attributes = {**attributes, FROM_MODEL: model_attribute(attributes[FROM_MODEL]),
                  TO_MODEL: model_attribute(attributes[TO_MODEL])}
    sink.add("bedrock_hooks.fallbacks", attributes)
    current = sink.span()
    if current is not None:
        current.add_event(FALLBACK_EVENT, attributes)


def circuit_changed(feature: Any, model: str, region: str, state: str, reason: str) -> None:
    """A model's circuit changed state (``open``: new calls go to its first fallback for the cooldown)."""
    _emit(feature.settings, lambda sink: sink.add("bedrock_hooks.circuit.changes", {
        MODEL: model_attribute(model), REGION: region, STATE: state, REASON: reason}))


def rate_limit_engaged(settings: Any = None) -> None:
    """The process-wide rate limiter started pacing a quota scope (its buckets are shared by every client,
    so this follows ``BEDROCK_HOOKS_OTEL`` when no settings are at hand)."""
    _emit(settings, lambda sink: sink.add("bedrock_hooks.rate_limit.engagements", {}))


def connection_evicted(settings: Any, service: str = "bedrock-runtime") -> None:
    """A pooled connection idle too long was closed before reuse."""
    _emit(settings, lambda sink: sink.add("bedrock_hooks.connections.evicted", {SERVICE: service}))


def stream_reissued(feature: Any, operation: Any, classification: Any, *, model: str | None = None,
                    span: Any = None) -> None:
    """A stream that failed before any content is being re-issued."""
    _emit(feature.settings, _record_reissue, {SERVICE: feature.service, OPERATION: _operation_name(operation),
                                              MODEL: model, ENTRY: classification.entry.name}, span)


def _record_reissue(sink: _Sink, attributes: dict[str, Any], span: Any) -> None:
    attributes = {**attributes, MODEL: model_attribute(attributes[MODEL])}
    sink.add("bedrock_hooks.streams.reissued", attributes)
    current = sink.span(span)
    if current is not None:
        current.add_event(REISSUE_EVENT, attributes)


def current_span(settings: Any) -> Any:
    """The span current now (a stream's call, at after-call), to add events to while the stream is read later;
    None when telemetry is off or there is no recording span."""
    sink = _otel(settings)
    return safe_invoke("telemetry", sink.span) if sink is not None else None


# -- shared shapes ------------------------------------------------------------------------------------------------

def _call(facts: Mapping[str, Any]) -> dict[str, Any]:
    return {SERVICE: facts["service"], OPERATION: facts["operation"], MODEL: model_attribute(facts["model"])}


def _judged(facts: Mapping[str, Any]) -> dict[str, Any]:
    return {**_call(facts), ENTRY: str(facts["entry"]), DECISION: str(facts["decision"]),
            REASON: str(facts["reason"])}


def _extra(event: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The log record's structured fields: the facts of the line, the model without an account number."""
    extra = {f"bedrock_hooks.{key}": value for key, value in facts.items() if f"bedrock_hooks.{key}" in LOG_FIELDS}
    extra["bedrock_hooks.model"] = safe_model(facts.get("model"))
    extra["bedrock_hooks.event"] = event
    return extra


def reset() -> None:
    """Forget the models seen (the cardinality bound) and the created instruments (tests)."""
    global _sink
    with _models_lock:
        _models.clear()
    with _sink_lock:
        _sink = _UNRESOLVED


# -- reference tables (docs/observability.md embeds them; tests/test_telemetry_docs.py compares) -----------------

def instruments_table() -> str:
    """Markdown table of every instrument: name, kind, unit, attributes, what it counts."""
    rows = ["| Instrument | Kind | Unit | Attributes | What it records |", "|---|---|---|---|---|"]
    rows += [f"| `{i.name}` | {i.kind} | `{i.unit}` | {', '.join(f'`{a}`' for a in i.attributes) or '(none)'} | "
             f"{i.description} |" for i in INSTRUMENTS]
    return "\n".join(rows)


def log_fields_table() -> str:
    """Markdown table of the ``extra`` fields of the library's decision log records."""
    rows = ["| Field | Meaning |", "|---|---|"]
    rows += [f"| `{name}` | {meaning} |" for name, meaning in LOG_FIELDS.items()]
    return "\n".join(rows)
