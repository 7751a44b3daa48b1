"""Client-side rate limiting shared by every Bedrock client of a process (issue 7).

A Bedrock quota (requests or tokens per minute) is per account, Region and model, not per client:
sixteen worker threads each with their own client all draw from it. Backoff alone spaces each
caller's *retries* but not the others' first attempts, so in a throttling storm most requests are
wasted 429s. botocore's ``adaptive`` mode paces, but per client and only if the application chose it.

This feature keeps one :class:`Bucket` per quota scope (:class:`~bedrock_hooks.quota_scope.QuotaScope`:
hashed account, signing Region, model from the URL path or the operation when there is none, endpoint;
and clock) for the whole process, so one account's or one model's throttling never paces another:

* **observe** every attempt on ``response-received`` (emitted per attempt, before the retry decision
  and its backoff sleep): a throttling error (catalog entries with throttle backoff) cuts the allowed
  rate to ``BETA`` x the rate actually booked, at most once per round trip (a 429 for a request sent
  before the last cut says nothing new); successes let the rate grow back along botocore's CUBIC
  curve, capped at twice the measured rate;
* **pace** every attempt on ``before-send`` once engaged: a virtual-time schedule (GCRA) books each
  send's cost ``cost/rate`` seconds apart, FIFO, and the caller sleeps (``Runtime.sleep``) until its
  slot, never longer than ``backoff_cap``;
* **settle** every successful answer: its real usage replaces what was booked for it.

The algorithm is :mod:`bedrock_hooks.pacing` (pure functions of a flat state; :class:`Bucket` applies
them under a lock, the one seam a shared store replaces).

Units (issue 14): Bedrock throttles model calls by tokens per minute, so a model scope counts tokens:
a send books its *expected charge* (input estimated from the body, plus the output this scope's
answers have had on average, at most the request's output limit, else the model's maximum, at the
burndown rate; see :mod:`bedrock_hooks.tokens`) and the answer's usage corrects it. Not Bedrock's
reservation (input + max_tokens): a FIFO schedule books a waiting request before it is sent, and a
reservation refunded only after the answer would hold every waiting request's slot for its whole
``max_tokens``, pacing a quota that settles at 100 tokens a request as if each took 4,000. The
reservation's other effect (few requests in flight when each reserves a lot) shows up as throttling,
which cuts the rate, and as the hint note for requests that set no ``maxTokens``. Other scopes
(ApplyGuardrail...) count requests. A token scope's level holds a minute of its rate (Bedrock's
bucket holds a minute of the quota); ``BEDROCK_HOOKS_QUOTAS`` fixes the rate per model pattern.

It engages only when throttling is at least :data:`ENGAGE_SHARE` of the last second's answers, out
of at least :data:`MIN_SAMPLE`, after :data:`MIN_OBSERVED` seconds of watching: a quota storm answers
most requests with 429, while scattered 429s among successes (a noisy fault mix) are left to backoff
instead of cutting the whole scope's rate again and again (the same test gates every further cut
while engaged). It disengages after :data:`RESET_AFTER` seconds without throttling.

A bucket is created by its scope's first throttle (or first request, for a scope with a user quota)
and forgotten after :data:`RESET_AFTER` quiet seconds, so while nothing was throttled recently the
registry is empty and a call costs two unlocked reads (no scope computed, no lock, no meter, no body
parsed). State is O(1) per bucket and at most :data:`MAX_BUCKETS` buckets live;
``BEDROCK_HOOKS_RATE_LIMIT=off`` attaches nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any, NamedTuple

from . import aio, pacing, process, telemetry
from .bodyformats import base_model
from .catalog import Backoff, Decision
from .classification import ErrorFacts, classify, facts_from_parts
from .config import Settings
from .failsafe import report_failure
from .features import ClientFeature
from .model_limits import ModelLimits, limits_of
from .quota_scope import QuotaScope, request_scope
from .state import call_state, classify_attempt
from .tokens import (SETTLEMENT_KEY, Estimate, Usage, charged, estimate_body, expected_cost, usage_of_response,
                     usage_of_stream_event)

logger = logging.getLogger("bedrock_hooks.ratelimit")

BETA = pacing.DEFAULT.beta  #: multiplicative decrease on throttling (botocore adaptive: 0.7)
SCALE = pacing.DEFAULT.scale  #: CUBIC scale constant, requests/s per s^3 (botocore adaptive: 0.4)
MIN_RATE = pacing.DEFAULT.min_rate  #: floor of the allowed rate, requests/s (botocore adaptive: 0.5)
MAX_RATE_FACTOR = pacing.DEFAULT.max_rate_factor  #: the allowed rate never exceeds this multiple of the measured rate
ENGAGE_SHARE = pacing.DEFAULT.engage_share  #: pacing engages when at least this share of the last second's answers...
MIN_SAMPLE = pacing.DEFAULT.min_sample  #: ...out of at least this many, were throttled
MIN_OBSERVED = pacing.DEFAULT.min_observed  #: seconds a bucket watches before it judges pressure
RESET_AFTER = pacing.DEFAULT.reset_after  #: seconds without throttling after which pacing disengages
MAX_BUCKETS = 256  #: bound on live buckets (scopes throttled within the last RESET_AFTER seconds)
#: Streaming operations: their usage arrives in the stream's last event, so they settle there.
STREAMING = frozenset({"ConverseStream", "InvokeModelWithResponseStream"})
#: Model operations whose cost is counted in tokens (every other scope counts requests).
TOKEN_OPERATIONS = frozenset({"Converse", "InvokeModel"}) | STREAMING
#: Learned pacing of a token scope: Bedrock's bucket holds a minute of its quota, so may ours.
TOKEN_CONFIG = pacing.PacingConfig(burst=60.0, min_observed=0.05, min_sample=8.0, probe=0.03)


class Bucket:
    """Pacing for one quota scope: the :mod:`~bedrock_hooks.pacing` state, changed under a lock.

    This is the seam a shared store replaces: every change of a scope's state goes through
    :meth:`_apply` (one pure pacing function, the state in, the new state out). Methods take ``now``
    from the caller's clock and never sleep: :meth:`before_send` returns how long to wait.
    """

    def __init__(self, clock: Callable[[], float], config: pacing.PacingConfig = pacing.DEFAULT) -> None:
        self.clock = clock
        self.config = config
        self._lock = process.lock()
        self._local = aio.TaskLocal()  # reservation time of this thread's (or task's) last attempt
        self._state: pacing.State = pacing.new_state(clock(), config)
        #: Output tokens of this scope's answers, moving average (0.0: none seen). A local estimator, not
        #: pacing state: it only shapes what this process books for its next requests.
        self.output_avg = 0.0

    def _apply(self, operation: Callable[..., tuple[pacing.State, Any]], *args: Any) -> Any:
        """``operation(state, *args, config)`` under the lock: the one place the state changes."""
        with self._lock:
            self._state, result = operation(self._state, *args, self.config)
        return result

    # -- events ----------------------------------------------------------------------------------
    def before_send(self, now: float, max_wait: float = float("inf"), cost: float = 1.0) -> float:
        """Reserve ``cost`` units for a send; the seconds to wait for its slot (0.0 unless engaged)."""
        wait = self._apply(pacing.reserve, cost, now, max_wait)
        self._local.reserved = now
        return wait

    def settle(self, now: float, delta: float) -> None:
        """Book what a request really used beyond its reservation (negative: a refund)."""
        self._apply(pacing.settle, delta, now)

    def settle_usage(self, now: float, usage: Usage, limits: ModelLimits, booked: float) -> None:
        """Book a model answer's real charge against the ``booked`` units, and learn its output size."""
        self.settle(now, self._learn_output(usage, limits, booked))

    def _learn_output(self, usage: Usage, limits: ModelLimits, booked: float) -> float:
        """Fold the answer's output into :attr:`output_avg`; the units to settle (real charge - booked)."""
        output = float(usage.output_tokens)
        self.output_avg = output if self.output_avg <= 0 else self.output_avg + (output - self.output_avg) / 8.0
        return charged(usage, limits) - booked

    def on_response(self, now: float, throttled: bool, sent_at: float | None = None) -> None:
        """Adapt to one attempt's outcome; ``sent_at``: when its request was reserved (default: this
        thread's last :meth:`before_send`; never reserved counts as before the last cut)."""
        if sent_at is None:
            sent_at = getattr(self._local, "reserved", pacing.NEVER)
        was_engaged = self._state["engaged"]  # this process's view (a fleet bucket keeps it in step)
        self._apply(pacing.observe, throttled, sent_at, now)
        if self._state["engaged"] and not was_engaged:
            telemetry.rate_limit_engaged()

    # -- reading -----------------------------------------------------------------------------------
    def state(self) -> pacing.State:
        """A copy of the pacing state (tests, ``doctor``)."""
        with self._lock:
            return dict(self._state)

    @property
    def engaged(self) -> bool:
        return bool(self._state["engaged"])

    @property
    def rate(self) -> float:
        """Allowed units/s while engaged (tokens for a model scope, requests otherwise)."""
        return self._state["rate"]

    @property
    def throttles(self) -> int:
        return int(self._state["throttles"])

    @property
    def reductions(self) -> int:
        return int(self._state["reductions"])

    def measured_rate(self, now: float | None = None) -> float:
        """Units/s booked through this bucket over the last second."""
        return pacing.measured_rate(self.state(), self.clock() if now is None else now, self.config)

    def throttled_share(self, now: float) -> float:
        """Share of the last second's answers that were throttling."""
        return pacing.throttled_share(self.state(), now, self.config)

    def quiet(self, now: float) -> bool:
        """Nothing throttled or booked for :data:`RESET_AFTER` seconds: the bucket can be forgotten."""
        return pacing.quiet(self._state, now, self.config)


class Reservation(NamedTuple):
    """What one attempt booked: its bucket, the units reserved, when."""

    bucket: Bucket
    cost: float
    sent_at: float


class StreamSettlement:
    """Settles a stream's reservation when its usage arrives (the stream's last event), once.

    The stream wrapper (:mod:`bedrock_hooks.streaming`) hands it every event it delivers. A stream the
    application abandons before its end keeps its whole booking: the pacer errs on the side of the
    quota. So does every stream when the wrapper is off (``BEDROCK_HOOKS_HINTS=off`` and
    ``BEDROCK_HOOKS_STREAM_RETRY=off``). Events of a re-issued stream settle the first call's booking;
    the re-issue's stands.
    """

    __slots__ = ("reservation", "limits", "clock", "done", "shared_async")

    def __init__(self, reservation: Reservation, limits: ModelLimits, clock: Callable[[], float], *,
                 shared_async: bool = False) -> None:
        self.reservation, self.limits, self.clock, self.done = reservation, limits, clock, False
        #: an async client's fleet bucket: the stream's reader calls :meth:`on_event` without awaiting, so
        #: the shared booking runs as a task of the reader's loop (this process's copy is settled at once)
        self.shared_async = shared_async

    def on_event(self, event: Any) -> None:
        if self.done:
            return
        try:
            usage = usage_of_stream_event(event)
            if usage is None:
                return
            self.done = True
            bucket = self.reservation.bucket
            if self.shared_async:
                _in_background(bucket.settle_usage_async(self.clock(), usage, self.limits, self.reservation.cost))
            else:
                bucket.settle_usage(self.clock(), usage, self.limits, self.reservation.cost)
        except Exception as exc:
            report_failure("rate-limit (stream usage)", exc)


#: Shared bookings an event does not await (a stream's settlement), running as tasks: held until done
#: (the loop keeps only weak references to its tasks).
_background: set[Any] = set()


def _in_background(pending: Any) -> None:
    """Run ``pending`` (a coroutine that never raises) as a task of the running loop; without one, drop it
    (this process's copy already has the change)."""
    import asyncio

    try:
        task = asyncio.get_running_loop().create_task(pending)
    except RuntimeError:
        pending.close()
        return
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _booked(pending: list[Any]) -> None:
    """Await an async client's shared bookings in order; a failure is logged and the call goes on."""
    for step in pending:
        try:
            await step
        except Exception as exc:
            report_failure("rate-limit", exc)


def _shares_async(bucket: Any) -> bool:
    """Whether ``bucket`` books an async client's changes on the fleet's state (a fleet bucket)."""
    return bool(getattr(bucket, "shares_async", False))


# -- the process-wide registry: one bucket per quota scope, created by its first throttle ------------

_registry_lock = process.lock()
#: (scope, clock) -> bucket. Read without the lock (one dict lookup); written under it, never iterated unlocked.
_buckets: dict[tuple[QuotaScope, Any], Bucket] = {}
_PRUNE_EVERY = 64  #: prune quiet buckets every this many lookups that found none
_misses = [0]


def lookup(scope: QuotaScope, clock: Callable[[], float], *, create: bool = False,
           config: pacing.PacingConfig | None = None, fleet: Any = None) -> Bucket | None:
    """The shared bucket of ``scope``; with ``create`` (a throttle was seen, or the scope has a quota the
    user set) made if missing, with ``config`` (the first creator's wins); with ``fleet`` (a shared
    store and wall clock, :func:`bedrock_hooks.fleet_pacing.fleet_of`) its state is the fleet's.

    A bucket quiet for :data:`RESET_AFTER` seconds is forgotten, so the registry is empty, and the
    success path free, again once throttling has passed.
    """
    key = (scope, clock)
    bucket = _buckets.get(key)
    if bucket is not None and not create and bucket.quiet(clock()):
        _forget(key, bucket)
        return None
    if bucket is not None or not create:
        if bucket is None:
            _misses[0] += 1
            if _misses[0] % _PRUNE_EVERY == 0:
                prune()
        return bucket
    with _registry_lock:
        bucket = _buckets.get(key)
        if bucket is None:
            _prune_locked()
            if len(_buckets) >= MAX_BUCKETS:
                del _buckets[next(iter(_buckets))]  # the oldest scope gives way: bounded, never refused
            config = config or pacing.DEFAULT
            bucket = _buckets[key] = Bucket(clock, config) if fleet is None else fleet.bucket(scope, clock, config)
    return bucket


def _forget(key: tuple[QuotaScope, Any], bucket: Bucket) -> None:
    with _registry_lock:
        if _buckets.get(key) is bucket:
            del _buckets[key]


def _prune_locked() -> None:
    for key in [key for key, bucket in _buckets.items() if bucket.quiet(bucket.clock())]:
        del _buckets[key]


def prune() -> None:
    """Forget every bucket quiet for :data:`RESET_AFTER` seconds (by its own clock)."""
    with _registry_lock:
        _prune_locked()


def reset() -> None:
    """Forget every bucket (the last uninstall; tests)."""
    with _registry_lock:
        _buckets.clear()


def buckets() -> dict[tuple[QuotaScope, Any], Bucket]:
    """The live shared buckets, keyed by (scope, clock) (tests, ``doctor``)."""
    with _registry_lock:
        return dict(_buckets)


def is_throttling(status: int | None, parsed: Any, context: Any = None, headers: Any = None) -> bool:
    """Whether a response is throttling per the catalog (not a daily quota: that is not retried).

    With the call's ``context`` the attempt is classified once for every feature: the retry
    decision and the hint that follow on the same attempt reuse this classification.
    """
    if status is None or status < 400:
        return False

    def facts() -> ErrorFacts | None:
        return facts_from_parts(status, parsed if isinstance(parsed, dict) else None, headers)

    classification = classify_attempt(context, parsed, facts) if isinstance(context, dict) else _classify(facts())
    if classification is None:
        return False
    entry = classification.entry
    return entry.decision is Decision.RETRY and entry.backoff is Backoff.THROTTLE


def _classify(facts: ErrorFacts | None) -> Any:
    return classify(facts) if facts is not None else None


# -- the per-client feature --------------------------------------------------------------------------

def quota_config(quotas: tuple[tuple[str, float, float], ...], target: str) -> pacing.PacingConfig | None:
    """The fixed-rate pacing of a model scope whose model matches a ``BEDROCK_HOOKS_QUOTAS`` pattern
    (tried on the model ID, then on the foundation model of an inference profile), else None."""
    if not quotas or not target.startswith("model:"):
        return None
    model = target[len("model:"):].lower()
    names = (model, base_model(model))
    for pattern, per_second, period in quotas:
        if any(fnmatchcase(name, pattern.lower()) for name in names):
            return pacing.PacingConfig(fixed_rate=per_second, burst=period)
    return None


def scope_config(target: str, fixed: pacing.PacingConfig | None) -> pacing.PacingConfig:
    """A scope's pacing constants: the user's quota, else learned; a token scope's level holds a minute."""
    if fixed is not None:
        return fixed
    return TOKEN_CONFIG if target.startswith("model:") else pacing.DEFAULT


def request_cost(target: str, operation: str, request: Any, output_avg: float = 0.0) -> tuple[float, Estimate | None]:
    """(units to book, the token estimate) for one attempt: a model call books its expected charge
    (:func:`~bedrock_hooks.tokens.expected_cost`), any other call one request."""
    if operation not in TOKEN_OPERATIONS or not target.startswith("model:"):
        return 1.0, None
    estimate = estimate_body(getattr(request, "body", None)) or Estimate(0, None)
    return expected_cost(estimate, limits_of(target[len("model:"):]), output_avg), estimate


def max_tokens_note(limits: ModelLimits) -> str:
    """The hint sentence for a throttled request that set no output limit: the usual root cause.
    Short, so that it fits the one-line hint after the entry's cause and first fix."""
    burndown = f", output counting {limits.burndown:g}x" if limits.burndown != 1 else ""
    return (f"No maxTokens set: Bedrock reserved this model's maximum output ({limits.max_output:,} tokens{burndown}) "
            f"from the tokens-per-minute quota; setting maxTokens to what the answer needs lets more requests run at once.")


class RateLimit(ClientFeature):
    """Paces one client's sends by the bucket of each request's quota scope; detach restores plain botocore.

    The scope (account, Region, model, endpoint) is computed only while some scope of the process
    was throttled recently, or when the user set quotas: until then a send costs one thread-local
    store and one dict truthiness test, and a successful answer one more test: no lock, no meter,
    no body parsed.
    """

    def __init__(self, client: Any, settings: Settings, runtime: Any) -> None:
        super().__init__(client, settings, runtime)
        self.max_wait = float(settings.backoff_cap)
        self.quotas: tuple[tuple[str, float, float], ...] = tuple(getattr(settings, "quotas", ()) or ())
        self._configs: dict[str, pacing.PacingConfig | None] = {}  #: target -> fixed pacing (bounded)
        self._local = aio.TaskLocal()  # the attempt this thread (or asyncio task) is sending: its answer's scope comes from it
        self.fleet = _fleet_of(settings, self.runtime, self.is_async)  #: None: this process's own buckets

    def attach(self) -> None:
        self._registrations.add(f"before-send.{self.service}", self.on_before_send,
                                f"bedrock-hooks-ratelimit-send-{self.service}")
        self._registrations.add(f"response-received.{self.service}", self.on_response_received,
                                f"bedrock-hooks-ratelimit-observe-{self.service}")

    def scope(self, request: Any, event_name: str | None) -> QuotaScope:
        """The quota ``request`` draws on: account, signing Region, model (or operation), endpoint."""
        return request_scope(request, (event_name or "").rsplit(".", 1)[-1], self.region, self._signer)

    def fixed(self, target: str) -> pacing.PacingConfig | None:
        """The user's quota for ``target`` (cached per target, at most 512)."""
        if not self.quotas:
            return None
        try:
            return self._configs[target]
        except KeyError:
            config = quota_config(self.quotas, target)
            if len(self._configs) >= 512:
                self._configs.clear()
            self._configs[target] = config
            return config

    def on_before_send(self, request: Any = None, **kwargs: Any) -> Any:  # must return None: a value is the response
        try:
            if not _buckets and not self.quotas:  # unlocked read: nothing throttled recently anywhere in the process
                self._local.sent = (request, None, None, None)
                return
            event_name = kwargs.get("event_name")
            scope = self.scope(request, event_name)
            self._local.sent = (request, scope, None, None)
            fixed = self.fixed(scope.target)
            bucket = lookup(scope, self.runtime.clock, create=fixed is not None, config=scope_config(scope.target, fixed),
                            fleet=self.fleet)
            if bucket is None:
                return
            cost, estimate = request_cost(scope.target, (event_name or "").rsplit(".", 1)[-1], request, bucket.output_avg)
            now = self.runtime.clock()
            if self.is_async and _shares_async(bucket):  # the fleet's schedule, awaited: never a blocking socket
                pending = bucket.before_send_async(now, self.max_wait, cost)
                self._local.sent = (request, scope, Reservation(bucket, cost, now), estimate)
                return self._paced(pending, request, event_name)  # awaited by aiobotocore; resolves to None
            wait = bucket.before_send(now, self.max_wait, cost)
            self._local.sent = (request, scope, Reservation(bucket, cost, now), estimate)
            if wait > 0:  # a paced send (an unpaced one calls no telemetry)
                telemetry.waited(self, "rate-limit", wait, request=request, event_name=event_name)
            if wait > 0 and self.is_async:
                return aio.pause(self.runtime.async_sleep, wait)  # awaited by aiobotocore; resolves to None
            if wait > 0:
                self.runtime.sleep(wait)
        except Exception as exc:
            report_failure("rate-limit", exc)

    async def _paced(self, pending: Any, request: Any, event_name: Any) -> None:
        """An async client's send on the fleet's schedule: await the shared reservation, then its slot."""
        try:
            wait = await pending
            if wait > 0:
                telemetry.waited(self, "rate-limit", wait, request=request, event_name=event_name)
                await self.runtime.async_sleep(wait)
        except Exception as exc:
            report_failure("rate-limit", exc)

    def on_response_received(self, response_dict: Any = None, parsed_response: Any = None, context: Any = None,
                             **kwargs: Any) -> Any:  # None, or (async client, fleet bucket) the shared booking to await
        try:
            sent, self._local.sent = getattr(self._local, "sent", None) or (None, None, None, None), None
            request, scope, booked, estimate = sent
            if not isinstance(response_dict, dict):
                return  # no HTTP response (reset, timeout): says nothing about the quota; a reservation stands
            status = response_dict.get("status_code")  # successes count too: engaging needs a throttled share
            if booked is None and not _buckets and isinstance(status, int) and status < 400:
                return  # the idle path: a success while nothing was throttled recently: no lock, no meter
            headers = response_dict.get("headers")
            throttled = is_throttling(status, parsed_response, context, headers)
            if not throttled and not _buckets and booked is None:
                return
            event_name = kwargs.get("event_name")
            operation = (event_name or "").rsplit(".", 1)[-1]
            scope = scope or self.scope(request, event_name)
            bucket = booked.bucket if booked is not None else lookup(
                scope, self.runtime.clock, create=throttled, config=scope_config(scope.target, self.fixed(scope.target)),
                fleet=self.fleet)
            now = self.runtime.clock()
            settled = None
            if throttled:
                self._note_max_tokens(context, scope.target, operation, request, estimate)
            elif bucket is not None and isinstance(status, int) and status < 300:
                settled = self._settle(bucket, booked, scope.target, operation, parsed_response, headers, context, now)
            if bucket is None:
                return None
            sent_at = booked.sent_at if booked is not None else pacing.NEVER
            if self.is_async and _shares_async(bucket):  # awaited by aiobotocore, as before-send's wait is
                return _booked([step for step in (settled, bucket.on_response_async(now, throttled, sent_at)) if step])
            bucket.on_response(now, throttled, sent_at)
        except Exception as exc:
            report_failure("rate-limit", exc)

    def _settle(self, bucket: Bucket, booked: Reservation | None, target: str, operation: str, parsed: Any,
                headers: Any, context: Any, now: float) -> Any:
        """Book a success's real usage (a stream's at its end); unknown usage leaves the reservation standing.
        For an async client's fleet bucket, the awaitable that books it on the shared state (else None)."""
        shared = self.is_async and _shares_async(bucket)
        if operation not in TOKEN_OPERATIONS or not target.startswith("model:"):
            if booked is None:  # a request sent before its scope was watched: metered all the same
                return bucket.settle_async(now, 1.0) if shared else bucket.settle(now, 1.0)
            return None
        limits = limits_of(target[len("model:"):])
        if operation in STREAMING:
            if booked is not None and isinstance(context, dict):
                context[SETTLEMENT_KEY] = StreamSettlement(booked, limits, self.runtime.clock, shared_async=shared)
            return None
        usage = usage_of_response(operation, parsed, headers)
        if usage is None:
            return None
        cost = booked.cost if booked is not None else 0.0
        return bucket.settle_usage_async(now, usage, limits, cost) if shared else bucket.settle_usage(now, usage, limits, cost)

    def _note_max_tokens(self, context: Any, target: str, operation: str, request: Any,
                         estimate: Estimate | None) -> None:
        """On a throttle, name the usual root cause when the request set no output limit."""
        if operation not in TOKEN_OPERATIONS or not target.startswith("model:") or not isinstance(context, dict):
            return
        if estimate is None:
            estimate = estimate_body(getattr(request, "body", None))
        limits = limits_of(target[len("model:"):])
        if estimate is not None and estimate.max_tokens is None and limits.max_output > 0:
            call_state(context).note(max_tokens_note(limits))


def _fleet_of(settings: Settings, runtime: Any, is_async: bool) -> Any:
    from .fleet_pacing import fleet_of  # lazy: it subclasses this module's Bucket

    return fleet_of(settings, runtime, is_async)


def feature(client: Any, settings: Settings, runtime: Any) -> RateLimit | None:
    """The FEATURES factory: nothing attached when ``rate_limit`` is off."""
    if not getattr(settings, "rate_limit", False):
        return None
    return RateLimit(client, settings, runtime)
