"""Streaming calls: decisions and hints for errors that arrive *inside* an event stream.

Bedrock can answer ``200`` and then send an exception frame (``throttlingException``,
``modelStreamErrorException``...) while the application iterates; botocore raises
``EventStreamError`` and never retries it (botocore issue 3126), and a reset or a stall between
chunks surfaces as a raw urllib3 ``ProtocolError`` / ``ReadTimeoutError``.

On ``after-call`` of a streaming operation the response's event stream is replaced by a
:class:`RecoveringEventStream` (an ``EventStream`` subclass, so ``isinstance`` checks still hold); on an
aiobotocore client by an :class:`AioRecoveringEventStream` (an ``AioEventStream``, read with ``async for``,
where a reset is aiohttp's ``ClientPayloadError`` and a stall its ``SocketTimeoutError``). Both take every
decision in one shared path (:class:`_Delivery`, :meth:`_StreamCall.recover`); only reading, waiting and
calling differ. While iterating, a stream classifies a failure with the same catalog as everything else and:

* before any content event reached the application, when the entry is retryable, the policy allows
  it and ``BEDROCK_HOOKS_STREAM_RETRY`` is on: waits the backoff, re-issues the call with the same
  parameters (sharing the attempt and deadline budget), skips the preamble events the application
  already saw (``messageStart``) and continues, so the application sees one clean stream;
* otherwise raises the original exception, carrying the hint line and ``BedrockHooks`` info.

What was delivered is a property of the stream, not of one iterator (two loops, ``next(iter(...))``,
two threads or tasks all read one source). The stream of a re-issued call comes back through the client, so
instrumentation that wraps streams (OpenTelemetry's botocore extension) wraps it too, and it is read
through that wrapper: every span it starts ends.

Re-issuing is limited to read-only inference operations (:data:`RECOVERABLE`): an agent stream
may have run tools with side effects and is only annotated, never re-issued.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import importlib
import json
import logging
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from . import aio, compat, process, telemetry
from .budget import budget_for
from .classification import Classification, classify, facts_from_exception
from .config import Settings
from .features import ClientFeature, Runtime
from .hints import HintFacts, annotate_exception, build_info
from .policy import Reason, RetryPolicy, Verdict
from .failsafe import report_failure
from .state import INHERITED_STATE, CallState, call_state
from .tokens import SETTLEMENT_KEY

if TYPE_CHECKING:  # botocore's event-stream module is imported on first use (import cost)
    from botocore.eventstream import EventStream
    from botocore.exceptions import EventStreamError

logger = logging.getLogger("bedrock_hooks.streaming")
_T = TypeVar("_T")

#: (service, operation) pairs whose streams are safe to re-issue: pure inference, no side effects.
RECOVERABLE = frozenset({("bedrock-runtime", "ConverseStream"), ("bedrock-runtime", "InvokeModelWithResponseStream")})
#: Event types that carry no model output: seeing them does not make a re-issue unsafe.
PREAMBLE_EVENTS = frozenset({"messageStart"})
_PARAMS_KEY = "bedrock_hooks_stream_params"
_reissuing: contextvars.ContextVar[bool] = contextvars.ContextVar("bedrock_hooks_reissuing", default=False)


_streaming_ops: dict[tuple[str, str], tuple[str, ...]] = {}


def streaming_operations(service_model: Any) -> tuple[str, ...]:
    """Operations of a service whose output is an event stream (computed once per service model)."""
    key = (service_model.service_name, service_model.api_version)
    operations = _streaming_ops.get(key)
    if operations is None:
        operations = tuple(name for name in service_model.operation_names
                           if service_model.operation_model(name).has_event_stream_output)
        _streaming_ops[key] = operations
    return operations


def event_stream_member(operation_model: Any) -> str | None:
    """The output member that holds the event stream (``stream`` for Converse, ``body`` for Invoke)."""
    shape = operation_model.get_event_stream_output()
    if shape is None:
        return None
    for name, member in operation_model.output_shape.members.items():
        if member is shape or member.name == shape.name:
            return name
    return None


class StreamHooks(ClientFeature):
    """The per-client feature: capture parameters, wrap event streams in responses."""

    def __init__(self, client: Any, settings: Settings, runtime: Runtime) -> None:
        super().__init__(client, settings, runtime)
        self.service_name = client.meta.service_model.service_name
        self._client = weakref.ref(client)
        self.policy = RetryPolicy.for_client(settings, client)
        self.budget = budget_for(client)  #: the client's retry quota, shared with its unary calls
        self.read_timeout = getattr(client.meta.config, "read_timeout", None)
        self._service_model = client.meta.service_model

    def attach(self) -> None:
        """Register per streaming operation only, so other calls of the client pay nothing."""
        svc = self.service
        for operation in streaming_operations(self._service_model):
            if self.recoverable(operation):
                self._registrations.add(f"before-parameter-build.{svc}.{operation}", self.on_before_parameter_build,
                                        f"bedrock-hooks-params-{svc}-{operation}")
            self._registrations.add(f"after-call.{svc}.{operation}", self.on_after_call,
                                    f"bedrock-hooks-stream-{svc}-{operation}")

    def recoverable(self, operation_name: str) -> bool:
        # BEDROCK_HOOKS_RETRY=off hands retries to botocore, which never re-issues a stream: neither do we.
        return (self.settings.retry and self.settings.stream_retry
                and (self.service_name, operation_name) in RECOVERABLE)

    def on_before_parameter_build(self, params: Any = None, model: Any = None, context: Any = None,
                                  **kwargs: Any) -> None:
        """Keep the caller's parameters of a recoverable stream call, to re-issue it if it fails."""
        try:
            if model is not None and self.recoverable(model.name) and isinstance(context, dict):
                context[_PARAMS_KEY] = copy.copy(params)
        except Exception as exc:
            report_failure("before-parameter-build", exc)

    def on_after_call(self, http_response: Any = None, parsed: Any = None, model: Any = None, context: Any = None,
                      **kwargs: Any) -> None:
        try:
            if not isinstance(parsed, dict) or model is None or getattr(http_response, "status_code", 500) >= 300:
                return
            member = event_stream_member(model)
            inner = parsed.get(member) if member else None
            if not _is_event_stream(inner) or isinstance(inner, (_Wrapped, _Delivery)):
                return
            kind = "Aio" if self.is_async else ""  # aiobotocore's AioEventStream, read with `async for`
            if _reissuing.get():  # read by the stream that re-issued it, through any wrapper the app adds
                parsed[member] = _stream_type(f"{kind}TypedErrorsEventStream")(inner)
            else:
                call = _StreamCall(self, model.name, member, parsed, context)
                parsed[member] = _stream_type(f"{kind}RecoveringEventStream")(inner, call)
        except Exception as exc:
            report_failure("after-call (stream)", exc)


class _Reissue(NamedTuple):
    """A re-issue the policy allowed: wait ``delay`` seconds, then call ``method`` again."""

    delay: float
    classification: Classification
    method: Any  #: the client's method for the operation
    charged: int  #: the retry quota this retry took, given back when the new call streams


class _StreamCall:
    """One streaming call: its budget, and how to re-issue it.

    :meth:`recover` is the one recovery path of both kinds of stream. It is a coroutine whose only waits
    are the stream's ``_wait`` (the backoff) and ``_send`` (the new call): an aiobotocore stream awaits
    ``Runtime.async_sleep`` and the async client there; a botocore stream's versions block and return, so
    it runs the very same coroutine to its end without an event loop (:func:`_run_blocking`).
    """

    def __init__(self, hooks: StreamHooks, operation: str, member: str, response: dict[str, Any],
                 context: Any) -> None:
        self.hooks = hooks
        self.operation = operation
        self.member = member
        self.response = response
        self.params = context.get(_PARAMS_KEY) if isinstance(context, dict) else None
        self.settlement = context.get(SETTLEMENT_KEY) if isinstance(context, dict) else None  #: the pacer's
        self.state: CallState = call_state(context)
        retries = context.get("retries") if isinstance(context, dict) else None
        self.state.retry = self.state.retry.at(int((retries or {}).get("attempt") or 1))
        self.span = telemetry.current_span(hooks.settings)  #: the call's span, open until its stream ends
        self.decided: Classification | None = None

    async def recover(self, exc: BaseException, content_delivered: bool, stream: _Delivery) -> Any:
        """A new inner stream to continue with, or None after annotating ``exc`` for the application."""
        plan = self._plan(exc, content_delivered)
        if plan is None:
            return None
        if plan.delay > 0:
            await stream._wait(plan.delay)
        with self._as_reissue(plan):
            response = await stream._send(plan.method, self.params or {})
        return self._continue_with(exc, plan, response)

    def _plan(self, exc: BaseException, content_delivered: bool) -> _Reissue | None:
        """The re-issue to make, or None after annotating ``exc`` with why there is none."""
        classification = classify(facts_from_exception(exc))
        if classification is None:
            return None
        reason = self._refusal(content_delivered)
        if reason is None:
            verdict = self._verdict(classification, exc)
            client = self.hooks._client() if verdict.retry else None
            if client is not None:
                return _Reissue(verdict.delay, classification, _method(client, self.operation),
                                self.state.retry.charged)
            reason = Reason.REISSUE_FAILED if verdict.retry else verdict.reason
        telemetry.stream_failed(self.hooks, self.operation, classification, self.state.attempts, reason,
                                self._model(), self.span)
        self._annotate(exc, classification, reason)
        return None

    def ended(self) -> None:
        """The stream ended cleanly: a call that was re-issued recovered (counted once)."""
        if self.state.verdict is not None and self.decided is not None:
            telemetry.recovered(self.hooks, self.state, self.operation, model=self._model(), entry=self.decided.entry)
            self.decided = None

    def _model(self) -> str | None:
        return self.params.get("modelId") if isinstance(self.params, dict) else None

    def _refusal(self, content_delivered: bool) -> Reason | None:
        if content_delivered:
            return Reason.CONTENT_DELIVERED
        if not self.hooks.recoverable(self.operation) or self.params is None:
            return Reason.NOT_RECOVERABLE
        return None

    def _verdict(self, classification: Classification, exc: BaseException) -> Verdict:
        """The same decision as for a unary call (inference streams are reads: resending is safe)."""
        state, hooks = self.state, self.hooks

        def charge() -> int | None:
            return hooks.budget.acquire(state.attempts, hooks._service_model.operation_model(self.operation),
                                        {}, parsed=getattr(exc, "response", None), exception=exc)

        verdict, retry = hooks.policy.decide(classification, state.retry, hooks.runtime.clock(), budget=charge,
                                             calm=hooks.budget.calm, rng=hooks.runtime.rng)
        state.advance(verdict, retry)
        telemetry.decision(hooks, self.operation, classification, verdict, retry.attempts, model=self._model(),
                           span=self.span)
        self.decided = classification  #: what the latest decision was about (the outcome's attributes)
        return verdict

    @contextlib.contextmanager
    def _as_reissue(self, plan: _Reissue) -> Iterator[None]:
        """Around the new call: it shares this call's attempt and deadline budget, and its stream is left for
        this one to read; whatever it raises reaches the application as :func:`_as_stream_error`."""
        logger.info("bedrock-hooks: %s failed before any content (%s); re-issuing (attempt %d)",
                    self.operation, plan.classification.entry.name, self.state.attempts + 1)
        telemetry.stream_reissued(self.hooks, self.operation, plan.classification, model=self._model(), span=self.span)
        self.state.retry = self.state.retry.continued()
        token_state, token_flag = INHERITED_STATE.set(self.state), _reissuing.set(True)
        try:
            yield
        except Exception as exc:
            logger.info("bedrock-hooks: re-issued %s failed: %s", self.operation, type(exc).__name__)
            raise _ReissueFailed(exc) from exc
        finally:
            INHERITED_STATE.reset(token_state)
            _reissuing.reset(token_flag)

    def _continue_with(self, exc: BaseException, plan: _Reissue, response: Any) -> Any:
        """The re-issued call's stream (None if it has none), its attempts counted in the first response."""
        retries = response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
        self.state.retry = self.state.retry.at(1 + int(retries or 0))
        self.response.setdefault("ResponseMetadata", {})["RetryAttempts"] = self.state.attempts - 1
        stream = response.get(self.member)
        if not _is_event_stream(stream):
            telemetry.stream_failed(self.hooks, self.operation, plan.classification, self.state.attempts,
                                    Reason.REISSUE_FAILED, self._model(), self.span)
            self._annotate(exc, plan.classification, Reason.REISSUE_FAILED)
            return None
        self.hooks.budget.give_back(plan.charged)  # a retry that succeeded gets its cost back
        self.state.retry = replace(self.state.retry, held=max(0, self.state.retry.held - plan.charged))
        return stream

    def _annotate(self, exc: BaseException, classification: Classification, reason: Reason) -> None:
        if not self.hooks.settings.hints:
            return
        facts = HintFacts(attempts=self.state.attempts, reason=reason)
        if classification.entry.name == "ReadTimeout":
            facts.notes.append(
                f"The timeout that fired: Config(read_timeout={self.hooks.read_timeout}), the client's limit between "
                f"two stream chunks; raise it for long generations.")
        if reason == "content-delivered" and classification.entry.retryable:
            facts.notes.append("Not re-issued: part of the answer was already delivered; re-issuing would duplicate it.")
        annotate_exception(exc, build_info(classification, facts))


def _run_blocking(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """The result of a coroutine that never suspends: a botocore stream's waits block and return (no event loop)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("bedrock-hooks: a blocking stream read tried to suspend")


def _is_event_stream(value: Any) -> bool:
    """``isinstance(value, EventStream)`` (true for wrapt proxies of one too, and for aiobotocore's
    ``AioEventStream``); botocore's parsers have imported the module by the time a response exists."""
    from botocore.eventstream import EventStream

    return isinstance(value, EventStream)


def _method(client: Any, operation: str) -> Any:
    """The client method for an API operation name (``ConverseStream`` -> ``converse_stream``)."""
    from botocore import xform_name

    return getattr(client, xform_name(operation))


#: The attributes of botocore's ``EventStream`` a stand-in copies from the stream it stands for.
_EVENT_STREAM_FIELDS = ("_raw_stream", "_output_shape", "_operation_name", "_parser", "_event_generator")
_END = object()  #: what reading a stream's source returns at its end


def _adopt(target: Any, stream: Any) -> None:
    """Give ``target`` the botocore fields of ``stream`` (no ``EventStream.__init__``: that would start a second
    reader of the same body)."""
    for name in _EVENT_STREAM_FIELDS:
        setattr(target, name, getattr(stream, name, None))


class _Wrapped:
    """Base of the typed-errors streams: one stream the service answered, read through its own fields."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        _adopt(self, inner)

    def close(self) -> None:
        self._inner.close()


class _TypedErrors(_Wrapped):
    """Mixin of the ``EventStream`` around a stream the service answered: exception frames the service model does
    not declare keep their type (:func:`_events`). The stream of a re-issued call is one, so that whatever
    wrapper the application's instrumentation puts around it (OpenTelemetry ends its span there) still sees
    every event and the end of the stream."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return _events(self._inner)

    def get_initial_response(self) -> Any:
        return self._inner.get_initial_response()


class _AioTypedErrors(_Wrapped):
    """:class:`_TypedErrors` for aiobotocore's ``AioEventStream``: each ``async for`` gets an async generator over
    the one source, as ``AioEventStream.__aiter__`` gives."""

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self.__anext__()

    def __anext__(self) -> AsyncIterator[dict[str, Any]]:  # type: ignore[override]
        return _aio_events(self._inner)

    async def get_initial_response(self) -> Any:
        return await self._inner.get_initial_response()


class _Delivery:
    """What the recovering streams (botocore's and aiobotocore's) share: continue on a re-issued call while
    nothing was delivered yet.

    What was delivered belongs to the stream, not to one iterator: applications read the first token in one
    loop and the rest in another, call ``next(iter(stream))`` / ``anext(aiter(stream))``, or read from two
    threads or tasks. Every iterator pulls from one source under one lock, as botocore's iterators share one
    event generator, so each event reaches the application once and a failure is recovered once. Nothing is
    re-issued after content was delivered, after a failure reached the application, or after the application
    closed (or cancelled) the stream.

    :meth:`_next_event` is the one path from the source to the next event for both kinds; a subclass says only
    how to read its source (``_pull``), wait (``_wait``) and call (``_send``), and what lock readers share.
    """

    _typed = "TypedErrorsEventStream"  #: the stand-in type for the inner stream

    def __init__(self, inner: Any, call: _StreamCall) -> None:
        _adopt(self, inner)
        self._inner: Any = _stream_type(self._typed)(inner)
        self._call = call
        self._source: Any = None  #: the iterator over ``_inner`` every reader pulls from
        self._delivered = False  #: content (not only preamble) reached the application
        self._seen_preamble: set[str] = set()
        self._skip: frozenset[str] = frozenset()  #: preamble kinds a re-issued stream repeats
        self._gave_up = False  #: a failure reached the application
        self._closed = False

    async def _next_event(self) -> dict[str, Any] | None:
        """The next event for whichever reader asks (None at the end), recovering a failure on the way."""
        while True:
            try:
                event = await self._pull()
            except Exception as exc:
                self._source = None  # a generator that raised is done; reading on starts a new one
                replacement = await self._recover(exc)
                if replacement is None:
                    raise
                self._switch_to(replacement)
                continue
            if event is _END:
                self._call.ended()
                return None
            if self._accept(event):
                return event

    async def _pull(self) -> Any:
        raise NotImplementedError

    async def _wait(self, seconds: float) -> None:
        raise NotImplementedError

    async def _send(self, method: Any, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _accept(self, event: dict[str, Any]) -> bool:
        kind = next(iter(event), "")
        if self._call.settlement is not None and kind in ("metadata", "chunk"):  # the usage, at the stream's end
            self._call.settlement.on_event(event)
        if not self._delivered and kind in self._skip:
            return False
        if kind in PREAMBLE_EVENTS:
            self._seen_preamble.add(kind)
        else:
            self._delivered = True
        return True

    async def _recover(self, exc: BaseException) -> Any:
        if self._gave_up or self._closed:
            return None
        try:
            replacement = await self._call.recover(exc, self._delivered, self)
        except _ReissueFailed as failed:  # whatever botocore raised for the new call (a urllib3 error too)
            self._gave_up = True
            raise _as_stream_error(failed.error) from exc
        except Exception as internal:
            report_failure("stream recovery", internal)
            replacement = None
        self._gave_up = replacement is None
        return replacement

    def _switch_to(self, replacement: Any) -> None:
        self._close_quietly()  # the failed attempt's connection, and any wrapper's span around it
        self._inner = replacement
        _adopt(self, replacement)
        self._skip = frozenset(self._seen_preamble)
        if self._closed:  # closed by another thread or task while the call was re-issued
            self._close_quietly()

    def _close_quietly(self) -> None:
        try:
            self._inner.close()
        except Exception:
            pass

    def close(self) -> None:
        """Close the current stream; never re-issue afterwards. No lock: another reader may be blocked reading,
        and closing is how an application cancels it."""
        self._closed = True
        self._inner.close()


class _Recovering(_Delivery):
    """Mixin of :class:`RecoveringEventStream` (botocore): readers in any thread share one re-entrant lock."""

    def __init__(self, inner: Any, call: _StreamCall) -> None:
        super().__init__(inner, call)
        self._lock = process.rlock()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            with self._lock:
                event = _run_blocking(self._next_event())
            if event is None:
                return
            yield event

    async def _pull(self) -> Any:
        if self._source is None:
            self._source = iter(self._inner)
        return next(self._source, _END)

    async def _wait(self, seconds: float) -> None:
        self._call.hooks.runtime.sleep(seconds)

    async def _send(self, method: Any, params: dict[str, Any]) -> Any:
        return method(**params)

    def get_initial_response(self) -> Any:
        with self._lock:
            return self._inner.get_initial_response()


class _AioRecovering(_Delivery):
    """Mixin of :class:`AioRecoveringEventStream` (aiobotocore): the backoff awaits ``Runtime.async_sleep``, the
    re-issue awaits the async client, and readers in any task share one ``asyncio.Lock``.

    A read that is cancelled (``asyncio.wait_for``, a task group, the backoff before a re-issue) closes the
    stream and propagates the ``CancelledError`` unchanged: the response is released at once and nothing is
    re-issued later. (A cancelled read has finished aiobotocore's generator over the body, so plain aiobotocore
    ends such a stream early too, but leaves its response open; during the backoff the attempt had failed.)
    """

    _typed = "AioTypedErrorsEventStream"

    def __init__(self, inner: Any, call: _StreamCall) -> None:
        super().__init__(inner, call)
        import asyncio

        self._lock = asyncio.Lock()
        self._cancelled: type[BaseException] = asyncio.CancelledError

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self.__anext__()

    async def __anext__(self) -> AsyncIterator[dict[str, Any]]:  # type: ignore[override,misc]
        """An async generator over the one source, as ``AioEventStream.__anext__`` is (``__aiter__`` returns it)."""
        while True:
            event = await self._read()
            if event is None:
                return
            yield event

    async def _read(self) -> dict[str, Any] | None:
        async with self._lock:
            try:
                return await self._next_event()
            except self._cancelled:
                self._closed = True
                self._close_quietly()
                raise

    async def _pull(self) -> Any:
        if self._source is None:
            self._source = self._inner.__aiter__()
        try:
            return await self._source.__anext__()
        except StopAsyncIteration:
            return _END

    async def _wait(self, seconds: float) -> None:
        await self._call.hooks.runtime.async_sleep(seconds)

    async def _send(self, method: Any, params: dict[str, Any]) -> Any:
        return await method(**params)

    async def get_initial_response(self) -> Any:
        async with self._lock:
            return await self._inner.get_initial_response()


#: Each stand-in type: its mixin and the stream class it extends (so ``isinstance`` checks still hold).
_KINDS: dict[str, tuple[type, str, str]] = {
    "TypedErrorsEventStream": (_TypedErrors, "botocore.eventstream", "EventStream"),
    "RecoveringEventStream": (_Recovering, "botocore.eventstream", "EventStream"),
    "AioTypedErrorsEventStream": (_AioTypedErrors, "aiobotocore.eventstream", "AioEventStream"),
    "AioRecoveringEventStream": (_AioRecovering, "aiobotocore.eventstream", "AioEventStream"),
}
_stream_types: dict[str, type] = {}


def _stream_type(name: str) -> type:
    """The stream subclass ``name``, made on first use: importing the library imports neither botocore's
    event-stream module nor aiobotocore."""
    cls = _stream_types.get(name)
    if cls is None:
        mixin, module, base = _KINDS[name]
        stream_class = getattr(importlib.import_module(module), base)
        made = type(name, (mixin, stream_class), {"__module__": __name__, "__doc__": mixin.__doc__})
        cls = _stream_types.setdefault(name, made)
    return cls


def __getattr__(name: str) -> type:
    """``streaming.RecoveringEventStream``, ``streaming.AioRecoveringEventStream`` (and the typed-errors ones),
    made on first access."""
    if name in _KINDS:
        return _stream_type(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _parts(stream: Any) -> tuple[Any, Any]:
    """The raw event generator and the frame parser of a botocore (or aiobotocore) stream, or Nones."""
    generator, parse = getattr(stream, "_event_generator", None), getattr(stream, "_parse_event", None)
    return (generator, parse) if generator is not None and parse is not None else (None, None)


def _events(stream: EventStream) -> Iterator[dict[str, Any]]:
    """``EventStream.__iter__``, but an exception frame the service model does not declare (botocore
    then reports an empty code, e.g. ``modelTimeoutException`` on ConverseStream) keeps its type and
    message, taken from the frame's own ``:exception-type`` header and payload."""
    generator, parse = _parts(stream)
    if generator is None:
        yield from stream
        return
    for raw in generator:
        with _typed_error(raw):
            parsed = parse(raw)
        if parsed:
            yield parsed


async def _aio_events(stream: Any) -> AsyncIterator[dict[str, Any]]:
    """:func:`_events` for aiobotocore, whose raw generator and parser are async."""
    generator, parse = _parts(stream)
    if generator is None:
        async for event in stream:
            yield event
        return
    async for raw in generator:
        with _typed_error(raw):
            parsed = await parse(raw)
        if parsed:
            yield parsed


@contextlib.contextmanager
def _typed_error(raw: Any) -> Iterator[None]:
    """Around parsing one frame: an ``EventStreamError`` without a code gets the frame's own."""
    from botocore.exceptions import EventStreamError

    try:
        yield
    except EventStreamError as exc:
        _restore_code(exc, raw)
        raise


def _restore_code(exc: EventStreamError, raw: Any) -> None:
    error = exc.response.get("Error") if isinstance(exc.response, dict) else None
    if not isinstance(error, dict) or error.get("Code"):
        return
    try:
        headers = raw.headers
        code = headers.get(":exception-type") or headers.get(":error-code")
        message = headers.get(":error-message") or json.loads(raw.payload or b"{}").get("message", "")
    except Exception:
        return
    if code:
        error["Code"], error["Message"] = str(code), str(message or "")
        exc.args = (f"An error occurred ({code}) when calling the {exc.operation_name} operation: {message}",)


def _as_stream_error(error: BaseException) -> BaseException:
    """What iterating the stream raises when the re-issued call failed before streaming.

    Iterating a botocore stream raises ``EventStreamError`` (or a transport error), never another
    ``ClientError``; applications catch that, and so do stream wrappers (OpenTelemetry's ends its span on it).
    A service error of the re-issue becomes an ``EventStreamError`` with its response: code, message, hint
    and ``BedrockHooks`` unchanged, traceback kept. Transport errors are raised as they are.
    """
    from botocore.exceptions import ClientError, EventStreamError

    if not isinstance(error, ClientError) or isinstance(error, EventStreamError):
        return error
    converted = EventStreamError(error.response, error.operation_name)
    converted.args = error.args
    if hasattr(error, "bedrock_hooks"):
        converted.bedrock_hooks = error.bedrock_hooks  # type: ignore[attr-defined]
    return converted.with_traceback(error.__traceback__)


class _ReissueFailed(Exception):
    """Internal: carries the exception the re-issued call raised, told apart from a bug in this module."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def feature(client: Any, settings: Settings, runtime: Runtime) -> StreamHooks | None:
    """Factory for :data:`bedrock_hooks.installation.FEATURES`: only when hints or stream retry are on."""
    if not (settings.hints or settings.stream_retry) or not compat.available(compat.STREAMS):
        return None
    if aio.is_async(client) and not compat.available(compat.AIO_STREAMS):
        return None  # aiobotocore's streams stay plain: async for still works, without hints or re-issue
    return StreamHooks(client, settings, runtime)
