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
  rate to ``BETA`` x the rate actually sent, at most once per round trip (a 429 for a request sent
  before the last cut says nothing new); successes let the rate grow back along botocore's CUBIC
  curve, capped at twice the measured send rate;
* **pace** every attempt on ``before-send`` once engaged: a virtual-time schedule (GCRA) hands out
  send slots ``1/rate`` apart, FIFO, and the caller sleeps (``Runtime.sleep``) until its slot, never
  longer than ``backoff_cap``.

It engages only when throttling is seen from two threads within :data:`ENGAGE_WINDOW` seconds (a lone
sequential caller is already spaced by its own backoff) *and* throttling is at least
:data:`ENGAGE_SHARE` of the last second's responses: a quota storm answers most requests with 429,
while scattered 429s among successes (a noisy fault mix) are left to backoff instead of cutting the
whole scope's rate again and again (the same test gates every further cut while engaged). It
disengages after :data:`RESET_AFTER` seconds without throttling.

A bucket is created by its scope's first throttle and forgotten after :data:`RESET_AFTER` quiet
seconds, so while nothing was throttled recently the registry is empty and a call costs two
unlocked reads (no scope computed, no lock, no meter). State is O(1) per bucket and at most
:data:`MAX_BUCKETS` buckets live; ``BEDROCK_HOOKS_RATE_LIMIT=off`` attaches nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from . import aio, process
from .catalog import Backoff, Decision
from .classification import ErrorFacts, classify, facts_from_parts
from .config import Settings
from .failsafe import report_failure
from .features import ClientFeature
from .quota_scope import QuotaScope, request_scope
from .state import classify_attempt

logger = logging.getLogger("bedrock_hooks.ratelimit")

BETA = 0.7  #: multiplicative decrease on throttling (botocore adaptive: 0.7)
SCALE = 0.4  #: CUBIC scale constant, requests/s per s^3 (botocore adaptive: 0.4)
MIN_RATE = 0.5  #: requests/s floor of the allowed rate (botocore adaptive: 0.5)
MAX_RATE_FACTOR = 2.0  #: the allowed rate never exceeds this multiple of the measured send rate
ENGAGE_WINDOW = 1.0  #: throttles from two threads within this many seconds engage pacing...
ENGAGE_SHARE = 0.2  #: ...when at least this share of the last second's responses were throttled
MIN_SAMPLE = 20  #: responses in the last second needed before a share means anything
RESET_AFTER = 20.0  #: seconds without throttling after which pacing disengages
MAX_BUCKETS = 256  #: bound on live buckets (scopes throttled within the last RESET_AFTER seconds)
_SLOTS = 10  #: send-rate meter: 10 slots of 0.1 s (a sliding one-second window)
MIN_OBSERVED = 0.9  #: seconds a bucket watches (9 of the meter's 10 slots) before it judges pressure


class _Meter:
    """Events per second over a sliding one-second window: 10 slots of 0.1 s, constant memory."""

    def __init__(self) -> None:
        self._ids = [-1] * _SLOTS
        self._counts = [0] * _SLOTS

    def add(self, now: float, n: int = 1) -> None:
        slot = int(now * _SLOTS)
        i = slot % _SLOTS
        if self._ids[i] != slot:
            self._ids[i] = slot
            self._counts[i] = 0
        self._counts[i] += n

    def total(self, now: float) -> int:
        current = int(now * _SLOTS)
        return sum(c for s, c in zip(self._ids, self._counts) if current - _SLOTS < s <= current)


class Bucket:
    """Pacing for one quota scope: thread-safe, constant memory, clock injected.

    Methods take ``now`` from the caller's clock and never sleep: :meth:`before_send` returns how
    long the caller must wait for its send slot.
    """

    def __init__(self, clock: Callable[[], float], *, beta: float = BETA, scale: float = SCALE,
                 min_rate: float = MIN_RATE, engage_window: float = ENGAGE_WINDOW,
                 engage_share: float = ENGAGE_SHARE, reset_after: float = RESET_AFTER) -> None:
        self.clock = clock
        self.beta, self.scale, self.min_rate = beta, scale, min_rate
        self.engage_window, self.engage_share, self.reset_after = engage_window, engage_share, reset_after
        self._lock = process.lock()
        self._local = threading.local()  # send time of this thread's current attempt
        self._born = clock()
        self._sent = _Meter()
        self._responses = _Meter()
        self._throttled = _Meter()
        self.engaged = False
        self.rate = 0.0  #: allowed requests/s while engaged
        self.throttles = 0  #: throttling responses observed
        self.reductions = 0  #: times the rate was cut
        self._tat = 0.0  #: GCRA theoretical arrival time: the next free send slot
        self._w_max = 0.0
        self._k = 0.0
        self._last_cut = float("-inf")
        self._last_throttle = float("-inf")
        self._last_throttle_thread: int | None = None

    # -- meters (under the lock) -------------------------------------------------------------------
    def _count(self, now: float) -> None:
        self._sent.add(now)

    def measured_rate(self, now: float | None = None) -> float:
        """Requests/s through this bucket over the last second (or since creation).

        Sends are metered only while pacing is engaged (the idle path takes no lock on send); before
        that, answers received stand in for requests sent.
        """
        now = self.clock() if now is None else now
        window = min(1.0, max(0.1, now - self._born))
        return max(self._sent.total(now), self._responses.total(now)) / window

    def _pressure(self, now: float) -> bool:
        """Quota pressure, not noise: about a second observed, enough responses in it, a large share 429s.

        The bucket is born on a 429, so its first fraction of a second is a small sample that starts
        with a throttle: judged on it, scattered 429s (a noisy fault mix) looked like a storm.
        """
        return (now - self._born >= MIN_OBSERVED and self._responses.total(now) >= MIN_SAMPLE
                and self.throttled_share(now) >= self.engage_share)

    def throttled_share(self, now: float) -> float:
        """Share of the last second's responses that were throttling."""
        responses = self._responses.total(now)
        return self._throttled.total(now) / responses if responses else 0.0

    # -- events ----------------------------------------------------------------------------------
    def before_send(self, now: float, max_wait: float = float("inf")) -> float:
        """Reserve a send slot; the seconds to wait for it (0.0 unless engaged)."""
        with self._lock:
            wait = 0.0
            if self.engaged:
                if now - self._last_throttle > self.reset_after:
                    self._disengage()
                else:
                    slot = max(self._tat, now)
                    wait = min(slot - now, max_wait)
                    self._tat = slot + 1.0 / self.rate
            self._count(now + wait)
        self._local.reserved = now  # a 429 for a slot reserved before the last cut says nothing new
        return wait

    def on_response(self, now: float, throttled: bool) -> None:
        """Adapt to one attempt's outcome (call it from the thread that sent the attempt)."""
        if not throttled:
            with self._lock:
                self._responses.add(now)
                self._grow(now)
            return
        # Unknown send time (sent while pacing was off) counts as before the last cut: it says nothing new.
        reserved = getattr(self._local, "reserved", float("-inf"))
        thread = threading.get_ident()
        with self._lock:
            self.throttles += 1
            self._responses.add(now)
            self._throttled.add(now)
            if not self.engaged:
                other_thread = self._last_throttle_thread not in (None, thread)
                recent = now - self._last_throttle <= self.engage_window
                self._last_throttle, self._last_throttle_thread = now, thread
                if other_thread and recent and self._pressure(now):
                    self.engaged = True
                    self._tat = now
                    self._cut(now, self.measured_rate(now))
                    logger.debug("bedrock-hooks: throttling from several threads: pacing at %.2f req/s", self.rate)
                return
            self._last_throttle, self._last_throttle_thread = now, thread
            if reserved >= self._last_cut and self._pressure(now):  # paced, and still mostly throttled
                self._cut(now, min(self.rate, self.measured_rate(now)))

    # -- CUBIC ---------------------------------------------------------------------------------------
    def _cut(self, now: float, base: float) -> None:
        base = max(base, self.min_rate)
        self._w_max = base
        self._k = (base * (1.0 - self.beta) / self.scale) ** (1.0 / 3.0)
        self.rate = max(self.min_rate, base * self.beta)
        self._last_cut = now
        self.reductions += 1

    def _grow(self, now: float) -> None:
        if not self.engaged:
            return
        cubic = self.scale * (now - self._last_cut - self._k) ** 3 + self._w_max
        ceiling = MAX_RATE_FACTOR * max(self.measured_rate(now), self.min_rate)
        self.rate = max(self.min_rate, min(cubic, ceiling))

    def quiet(self, now: float) -> bool:
        """No throttling for :data:`RESET_AFTER` seconds (nor since creation): the bucket can be forgotten."""
        return now - max(self._last_throttle, self._born) > self.reset_after

    def _disengage(self) -> None:
        self.engaged = False
        self.rate = 0.0
        self._last_throttle_thread = None
        logger.debug("bedrock-hooks: no throttling for %gs: pacing off", self.reset_after)


# -- the process-wide registry: one bucket per quota scope, created by its first throttle ------------

_registry_lock = process.lock()
#: (scope, clock) -> bucket. Read without the lock (one dict lookup); written under it, never iterated unlocked.
_buckets: dict[tuple[QuotaScope, Any], Bucket] = {}
_PRUNE_EVERY = 64  #: prune quiet buckets every this many lookups that found none
_misses = [0]


def lookup(scope: QuotaScope, clock: Callable[[], float], *, create: bool = False) -> Bucket | None:
    """The shared bucket of ``scope``; with ``create`` (a throttle was seen) made if missing.

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
            bucket = _buckets[key] = Bucket(clock)
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

class RateLimit(ClientFeature):
    """Paces one client's sends by the bucket of each request's quota scope; detach restores plain botocore.

    The scope (account, Region, model, endpoint) is computed only while some scope of the process
    was throttled recently: until then a send costs one thread-local store and one dict truthiness
    test, and a successful answer one more test — no lock, no meter.
    """

    def __init__(self, client: Any, settings: Settings, runtime: Any) -> None:
        super().__init__(client, settings, runtime)
        self.max_wait = float(settings.backoff_cap)
        self._local = threading.local()  # the attempt this thread is sending: its answer's scope comes from it

    def attach(self) -> None:
        self._registrations.add(f"before-send.{self.service}", self.on_before_send,
                                f"bedrock-hooks-ratelimit-send-{self.service}")
        self._registrations.add(f"response-received.{self.service}", self.on_response_received,
                                f"bedrock-hooks-ratelimit-observe-{self.service}")

    def scope(self, request: Any, event_name: str | None) -> QuotaScope:
        """The quota ``request`` draws on: account, signing Region, model (or operation), endpoint."""
        return request_scope(request, (event_name or "").rsplit(".", 1)[-1], self.region, self._signer)

    def on_before_send(self, request: Any = None, **kwargs: Any) -> Any:  # must return None: a value is the response
        try:
            if not _buckets:  # unlocked read: nothing throttled recently anywhere in the process
                self._local.sent = (request, None)
                return
            scope = self.scope(request, kwargs.get("event_name"))
            self._local.sent = (request, scope)
            bucket = lookup(scope, self.runtime.clock)
            if bucket is None or not bucket.engaged:
                return
            wait = bucket.before_send(self.runtime.clock(), self.max_wait)
            if wait > 0 and self.is_async:
                return aio.pause(self.runtime.async_sleep, wait)  # awaited by aiobotocore; resolves to None
            if wait > 0:
                self.runtime.sleep(wait)
        except Exception as exc:
            report_failure("rate-limit", exc)

    def on_response_received(self, response_dict: Any = None, parsed_response: Any = None, context: Any = None,
                             **kwargs: Any) -> None:
        try:
            (request, scope), self._local.sent = getattr(self._local, "sent", None) or (None, None), None
            if not isinstance(response_dict, dict):
                return  # no HTTP response (reset, timeout): says nothing about the quota
            status = response_dict.get("status_code")  # successes count too: engaging needs a throttled share
            if not _buckets and isinstance(status, int) and status < 400:
                return  # the idle path: a success while nothing was throttled recently: no lock, no meter
            throttled = is_throttling(status, parsed_response, context, response_dict.get("headers"))
            if not throttled and not _buckets:
                return
            scope = scope or self.scope(request, kwargs.get("event_name"))
            bucket = lookup(scope, self.runtime.clock, create=throttled)
            if bucket is not None:
                bucket.on_response(self.runtime.clock(), throttled)
        except Exception as exc:
            report_failure("rate-limit", exc)


def feature(client: Any, settings: Settings, runtime: Any) -> RateLimit | None:
    """The FEATURES factory: nothing attached when ``rate_limit`` is off."""
    if not getattr(settings, "rate_limit", False):
        return None
    return RateLimit(client, settings, runtime)
