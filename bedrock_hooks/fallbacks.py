"""Fallbacks: alternative models, inference profiles and Regions, inside botocore's retry loop.

The seed's remedies go beyond retrying the same request: use an alternative model when one is not
found or not accessible, an inference profile when on-demand throughput is not supported, another
Region when 503s persist. This feature does it transparently for ``converse``/``invoke_model``
call sites:

* ``needs-retry`` (service level, so it runs after :class:`~bedrock_hooks.retry.ClientHooks` has
  judged the attempt): when the call's verdict is "stop" and the entry allows a reroute, the request
  dict is pointed at the next alternative (model in the URL path, or Region in the host and the SigV4
  signing Region) and the handler answers "retry now" with a fresh budget for the new target. On the
  success that ends a rerouted call it says who served it in ``response["BedrockHooks"]`` (a final
  failure's ``BedrockHooks`` lists the route, from the call state, via the hint). A call nothing
  happened to carries no call state: the handler returns after one dict lookup.
* ``before-call``: new calls go straight to a remembered inference profile, or to a model's first
  fallback while its circuit is open. :attr:`Router.hot` names the models that have such state, so a
  call for any other model costs one set lookup.

Async clients (aiobotocore) make the same decisions from the same state. With a shared store they read and
write it awaited, on :class:`~bedrock_hooks.store_aio.AsyncRedisStore`, never on a blocking socket: both
events are awaited by aiobotocore's emitter, so a handler whose decision needs the store returns an
awaitable that does the store I/O and then decides (a call whose model nothing is known of still costs one
lookup and no awaitable). No decision is left to a background task.

Circuits and remembered profiles are keyed by :class:`~bedrock_hooks.quota_scope.QuotaScope` (hashed
account, Region, model, endpoint): one account's throttling never reroutes another's calls.
InvokeModel bodies are model-specific, so InvokeModel only falls back within one body format
(:mod:`bedrock_hooks.bodyformats`) unless ``BEDROCK_HOOKS_FALLBACK_CROSS_PROVIDER`` is on; Converse
requests may go anywhere. Region failover needs the new Region's endpoint: a standard regional host
is rewritten, a pinned ``REGION=URL`` is used; any other host (a proxy, a PrivateLink alias) is not
failed over, and the hint says so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Generator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from . import circuit, process, store, telemetry
from .bodyformats import GEO_PREFIXES, same_body_format
from .catalog import Entry
from .config import Settings
from .failsafe import report_failure
from .features import ClientFeature, Runtime
from .quota_scope import QuotaScope, account_of, endpoint_of, model_in_path
from .state import STATE_KEY, CallState, call_state
from .store import MemoryStore, store_for, uses_wall_clock

logger = logging.getLogger("bedrock_hooks.fallbacks")

#: Operations whose model is the ``{modelId}`` label of ``/model/{modelId}/...``.
ROUTABLE = frozenset({"Converse", "ConverseStream", "InvokeModel", "InvokeModelWithResponseStream"})
#: Operations whose request body does not depend on the model.
MODEL_AGNOSTIC = frozenset({"Converse", "ConverseStream"})
#: Region prefix -> geographic cross-Region inference profile prefix, most specific first (data).
PROFILE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("us-gov-", "us-gov"), ("us-", "us"), ("eu-", "eu"), ("ap-", "apac"), ("ca-", "ca"),
)
#: Hosts whose Region is known, so another Region's endpoint is too: ``bedrock-runtime[-fips].<region>.<domain>``.
REGIONAL_HOST = re.compile(r"^(bedrock(?:-runtime)?(?:-fips)?)\.([a-z]{2}(?:-[a-z]+)+-\d+)\."
                           r"(amazonaws\.com(?:\.cn)?|api\.aws)(:\d+)?$")
_MAX_TRACKED = store.CAPACITY  # scopes the in-process store keeps per family (circuits, profiles): LRU
_MAX_HOT = 4 * _MAX_TRACKED  # URL-path forms in a router's hot filter (two per model: raw and percent-encoded)
PROFILE_FAMILY = "profile"  #: the store family of remembered inference profiles
PROFILE_TTL = 86400.0  #: seconds a remembered profile lives unused (each use starts it again)
HOT_SYNC = 1.0  #: seconds between two reads of the fleet's hot models (shared store only)
REMARK_AFTER = 3600.0  #: a remembered profile in use is marked hot again (locally and for the fleet) hourly

__all__ = ["ROUTABLE", "FallbackHooks", "Router", "feature", "model_in_path", "profile_for", "regional_url",
           "reset_routers", "router_for"]


def profile_for(model_id: str, region: str) -> str | None:
    """The geographic inference profile ID for a foundation model in ``region`` (None if unknown)."""
    if model_id.startswith("arn:") or model_id.split(".", 1)[0] in GEO_PREFIXES:
        return None
    for region_prefix, geo in PROFILE_PREFIXES:
        if region.startswith(region_prefix):
            return f"{geo}.{model_id}"
    return None


def regional_url(url: str, home: str, region: str, pinned: str | None) -> str | None:
    """``url`` sent to ``region`` instead of ``home``; None when that Region's endpoint is not known.

    A pinned endpoint is used as given. Otherwise only a standard regional host naming ``home`` can
    be rewritten: a proxy or a PrivateLink alias (``vpce-...``) names no Region (or names its own VPC
    endpoint, which does not exist in the other Region), so signing for another Region while
    sending to the same host would only fail there or, worse, be served by the home Region.
    """
    parts = urlsplit(url)
    if pinned:
        target = urlsplit(pinned)
        return urlunsplit(parts._replace(scheme=target.scheme, netloc=target.netloc))
    match = REGIONAL_HOST.match(parts.netloc.lower())
    if match is None or match.group(2) != home or not same_partition(home, region):
        return None
    service, _, domain, port = match.groups()
    return urlunsplit(parts._replace(netloc=f"{service}.{region}.{domain}{port or ''}"))


_partitions: dict[str, str | None] = {}


def partition_of(region: str) -> str | None:
    """The AWS partition of ``region`` (``aws``, ``aws-cn``, ``aws-us-gov``...), from botocore's endpoint
    data (read once, on the first failover); None for a name no partition claims."""
    if region not in _partitions:
        try:
            import botocore.session

            _partitions[region] = botocore.session.get_session().get_partition_for_region(region)
        except Exception:
            _partitions[region] = None
    return _partitions[region]


def same_partition(home: str, region: str) -> bool:
    """A request never fails over out of its partition: another partition has other credentials, other
    hosts (``amazonaws.com.cn``) and, for GovCloud and China, rules about where the data may go."""
    return partition_of(home) == partition_of(region)


def _with_model(path_or_url: str, model_id: str) -> str:
    parts = urlsplit(path_or_url)
    prefix, _, rest = parts.path.partition("/model/")
    if prefix or "/" not in rest:
        return path_or_url
    path = f"/model/{quote(model_id, safe='-_.~')}/{rest.split('/', 1)[1]}"
    return urlunsplit(parts._replace(path=path))


def _path_forms(model_id: str) -> tuple[str, ...]:
    """How ``model_id`` can appear as the second segment of a URL path (botocore percent-encodes it)."""
    return tuple({model_id, quote(model_id, safe="-_.~")})


def _path_segment(url_path: Any) -> str:
    """``anthropic.claude...%3A0`` of ``/model/anthropic.claude...%3A0/converse``: one C-level split."""
    parts = url_path.split("/", 3) if isinstance(url_path, str) else ()
    return parts[2] if len(parts) > 3 else ""


class Router:
    """Fallback state for one configuration: circuits and remembered profiles, per scope, in its store.

    The state itself lives in the configuration's :mod:`store <bedrock_hooks.store>`: in process by
    default (bounded, least recently used evicted), or on Redis, shared by the fleet. :attr:`hot` is
    this process's cheap filter in front of it; with a shared store it also learns, at most once per
    :data:`HOT_SYNC` seconds, the models other processes opened a circuit or remembered a profile for.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.chains = dict(settings.fallbacks)
        self.store = store_for(settings)
        #: Shared state needs one time base for the fleet: wall-clock seconds instead of the monotonic clock.
        self.wall_clock = uses_wall_clock(self.store)
        self._lock = process.lock()
        #: URL-path forms of the models with a remembered profile or an opened circuit in some scope,
        #: -> until when. Replaced (never mutated) under the lock and read without it: a new call for
        #: any other model is not routed, at the cost of one lookup.
        self.hot: dict[str, float] = {}
        self._next_sync = float("-inf")

    def now(self, runtime: Runtime) -> float:
        """The time base of this router's state (the injected clocks of ``runtime``)."""
        return runtime.wall() if self.wall_clock else runtime.clock()

    # -- store I/O, written once for both kinds of client ----------------------------------------------
    # Each operation below that reads or writes the store is a generator of store requests
    # ``(method name, args)``, sent each answer: the sync methods answer from :attr:`store` (blocking
    # Redis, or in process), the ``*_async`` ones await the same method of an async store (aiobotocore
    # clients on Redis, :class:`~bedrock_hooks.store_aio.AsyncRedisStore`). One decision, two transports.
    def _answer(self, name: str, args: tuple[Any, ...]) -> Any:
        return getattr(self.store, name)(*args)

    # -- the cheap check ---------------------------------------------------------------------------
    def _mark_hot(self, model: str, until: float, now: float, *, share: bool = True) -> None:
        _drive(self._marking_hot(model, until, now, share), self._answer)

    def _marking_hot(self, model: str, until: float, now: float, share: bool) -> Steps:
        forms = _path_forms(model)
        with self._lock:
            hot = dict(self.hot)
            for form in forms:
                hot[form] = max(hot.pop(form, 0.0), until)  # re-inserted: the most recently marked last
            self.hot = self._bounded(hot, now)
        if share:
            yield "mark_hot", (forms, until, now)

    def _bounded(self, hot: dict[str, float], now: float) -> dict[str, float]:
        """At most :data:`_MAX_HOT` forms. In process the store knows exactly which models still have
        state (its tables evict the least recently used): the filter is rebuilt from it. A shared store
        cannot be listed cheaply: the least recently marked forms give way (a use re-marks, see
        :meth:`remembered_profile`)."""
        if len(hot) <= _MAX_HOT:
            return hot
        if isinstance(self.store, MemoryStore):
            live = {scope.target for scope, _ in self.store.snapshot(PROFILE_FAMILY, now)}
            live |= {scope.target for scope, state in self.store.snapshot(circuit.FAMILY, now)
                     if state.get("open", 0.0) > now}
            models = {form for target in live for form in _path_forms(target.partition(":")[2])}
            hot = {form: until for form, until in hot.items() if form in models and until > now}
        while len(hot) > _MAX_HOT:
            del hot[next(iter(hot))]
        return hot

    def cool_down(self, now: float) -> None:
        """Drop models whose circuits have all closed (and profiles that expired) from :attr:`hot`."""
        if all(until > now for until in self.hot.values()):
            return
        with self._lock:
            self.hot = {form: until for form, until in self.hot.items() if until > now}

    def sync(self, now: float) -> None:
        """With a shared store: learn the fleet's hot models, at most once per :data:`HOT_SYNC` seconds."""
        _drive(self._syncing(now), self._answer)

    def sync_due(self, now: float) -> bool:
        return self.wall_clock and now >= self._next_sync

    def _syncing(self, now: float) -> Steps:
        if not self.sync_due(now):
            return
        self._next_sync = now + HOT_SYNC
        shared = yield "hot_models", (now,)
        if any(self.hot.get(form, 0.0) < until for form, until in shared.items()):
            with self._lock:
                hot = dict(self.hot)
                for form, until in shared.items():
                    hot[form] = max(hot.get(form, 0.0), until)
                self.hot = self._bounded(hot, now)

    # -- circuit breaker ------------------------------------------------------------------------
    def record_pressure(self, scope: QuotaScope, now: float) -> bool:
        """Count a throttling/unavailable error in ``scope``; True when this one opened its circuit."""
        return _drive(self._pressing(scope, now), self._answer)

    def _pressing(self, scope: QuotaScope, now: float) -> Steps:
        if self.settings.circuit_threshold <= 0 or not self.chains.get(_model_of(scope)):
            return False
        s = self.settings
        opened, until = yield "apply", (circuit.PRESSURE, circuit.FAMILY, scope, now,
                                        (float(s.circuit_threshold), s.circuit_window, s.circuit_cooldown),
                                        s.circuit_window + s.circuit_cooldown)
        if until > now:  # opened now, or already open (perhaps by another process)
            yield from self._marking_hot(_model_of(scope), until, now, bool(opened))
        return bool(opened)

    def circuit_open(self, scope: QuotaScope, now: float) -> bool:
        return _drive(self._status(scope, now), self._answer)

    def _status(self, scope: QuotaScope, now: float) -> Steps:
        (until,) = yield "apply", (circuit.STATUS, circuit.FAMILY, scope, now, (),
                                   self.settings.circuit_window + self.settings.circuit_cooldown)
        return until > now

    # -- inference profiles -----------------------------------------------------------------------
    def remember_profile(self, scope: QuotaScope, profile: str, now: float) -> None:
        _drive(self._remembering(scope, profile, now), self._answer)

    def _remembering(self, scope: QuotaScope, profile: str, now: float) -> Steps:
        yield "put_text", (PROFILE_FAMILY, scope, profile, now, PROFILE_TTL)
        yield from self._marking_hot(_model_of(scope), now + PROFILE_TTL, now, True)

    def remembered_profile(self, scope: QuotaScope, now: float) -> str | None:
        """The profile remembered for ``scope``; a use keeps its model in :attr:`hot` (re-marked hourly)."""
        return _drive(self._recalling(scope, now), self._answer)

    def _recalling(self, scope: QuotaScope, now: float) -> Steps:
        profile = yield "get_text", (PROFILE_FAMILY, scope, now, PROFILE_TTL)
        if profile is not None:
            model = _model_of(scope)
            if self.hot.get(model, 0.0) < now + PROFILE_TTL - REMARK_AFTER:
                yield from self._marking_hot(model, now + PROFILE_TTL, now, True)
        return profile

    # -- the same operations, awaited on an async store (aiobotocore clients on Redis) ----------------
    async def sync_async(self, aio_store: Any, now: float) -> None:
        await _drive_async(self._syncing(now), _asking(aio_store))

    async def record_pressure_async(self, aio_store: Any, scope: QuotaScope, now: float) -> bool:
        return await _drive_async(self._pressing(scope, now), _asking(aio_store))

    async def circuit_open_async(self, aio_store: Any, scope: QuotaScope, now: float) -> bool:
        return await _drive_async(self._status(scope, now), _asking(aio_store))

    async def remember_profile_async(self, aio_store: Any, scope: QuotaScope, profile: str, now: float) -> None:
        await _drive_async(self._remembering(scope, profile, now), _asking(aio_store))

    async def remembered_profile_async(self, aio_store: Any, scope: QuotaScope, now: float) -> str | None:
        return await _drive_async(self._recalling(scope, now), _asking(aio_store))

    # -- alternatives -----------------------------------------------------------------------------
    def alternatives(self, model: str, operation: str) -> list[str]:
        """The configured alternatives for ``model`` that ``operation`` can use, in order."""
        chain = list(self.chains.get(model, ()))
        if operation in MODEL_AGNOSTIC or self.settings.fallback_cross_provider:
            return chain
        allowed = [alt for alt in chain if same_body_format(model, alt)]
        skipped = [alt for alt in chain if alt not in allowed]
        if skipped:
            logger.info("bedrock-hooks: InvokeModel fallbacks %s skipped: their body format differs from %s's "
                        "or is unknown (set BEDROCK_HOOKS_FALLBACK_CROSS_PROVIDER=on to allow)", skipped, model)
        return allowed


def _model_of(scope: QuotaScope) -> str:
    return scope.target.partition(":")[2]


#: A decision that needs I/O: a generator yielding requests ``(method name, args)``, sent each answer, returning
#: its result (see :class:`Router`).
Steps = Generator[tuple[str, tuple[Any, ...]], Any, Any]


def _drive(steps: Steps, answer: Callable[[str, tuple[Any, ...]], Any]) -> Any:
    """Run ``steps`` to its result, each request answered by ``answer`` (blocking or in process)."""
    try:
        request = next(steps)
        while True:
            request = steps.send(answer(*request))
    except StopIteration as done:
        return done.value


async def _drive_async(steps: Steps, answer: Callable[[str, tuple[Any, ...]], Awaitable[Any]],
                       request: tuple[str, tuple[Any, ...]] | None = None) -> Any:
    """:func:`_drive` with each answer awaited (``request``: the first one, when ``steps`` already made it)."""
    try:
        if request is None:
            request = next(steps)
        while True:
            request = steps.send(await answer(*request))
    except StopIteration as done:
        return done.value


def _asking(aio_store: Any) -> Callable[[str, tuple[Any, ...]], Awaitable[Any]]:
    """Answers a :class:`Router` store request with the awaited method of the same name of ``aio_store``."""
    return lambda name, args: getattr(aio_store, name)(*args)


_routers: dict[Settings, Router] = {}
_routers_lock = process.lock()


def router_for(settings: Settings) -> Router:
    """One router per configuration, shared by every client installed with it."""
    with _routers_lock:
        router = _routers.get(settings)
        if router is None:
            router = _routers[settings] = Router(settings)
        return router


def reset_routers() -> None:
    """Forget circuit and profile state of this process (tests; or after changing models in a long-lived
    process). A shared store's state is the fleet's: it expires by its TTLs, it is never wiped from here."""
    with _routers_lock:
        _routers.clear()
    store.reset_stores(circuit.FAMILY, PROFILE_FAMILY)


class FallbackHooks(ClientFeature):
    """The per-client feature."""

    def __init__(self, client: Any, settings: Settings, runtime: Runtime) -> None:
        super().__init__(client, settings, runtime)
        self.router = router_for(settings)
        #: An async client on a shared store: the router's store operations are awaited on this store (an event
        #: loop must never wait on a blocking Redis socket); None: they run on :attr:`Router.store` (sync
        #: clients; and every client with ``memory://``, whose store never blocks).
        self.aio_store: Any = None
        if self.is_async and self.router.wall_clock:
            from .store_aio import aio_store_for

            self.aio_store = aio_store_for(settings)
        self._operations = client.meta.service_model.operation_names

    def attach(self) -> None:
        """``before-call`` per routable operation only, so other calls of the client pay nothing.

        ``needs-retry`` is at service level: botocore calls handlers of more specific event names
        first, and this one must run after :class:`ClientHooks` (service level) has judged the attempt.
        """
        svc = self.service
        self._registrations.add(f"needs-retry.{svc}", self.on_needs_retry, f"bedrock-hooks-fallback-{svc}")
        for operation in sorted(ROUTABLE & set(self._operations)):
            suffix = f"{svc}.{operation}"
            self._registrations.add(f"before-call.{suffix}", self.on_before_call, f"bedrock-hooks-route-{suffix}")

    def scope(self, request_dict: dict[str, Any], model_id: str) -> QuotaScope:
        """The quota scope of ``model_id`` where ``request_dict`` is going now."""
        return QuotaScope(account_of(self._signer), self._current_region(request_dict), f"model:{model_id}",
                          endpoint_of(request_dict.get("url", "")))

    # -- store I/O: blocking (or in process) for sync clients, awaited for async ones on Redis -----------
    def _ask_router(self, name: str, args: tuple[Any, ...]) -> Any:
        return getattr(self.router, name)(*args)

    def _ask_router_async(self, name: str, args: tuple[Any, ...]) -> Awaitable[Any]:
        return getattr(self.router, name + "_async")(self.aio_store, *args)

    def _decide(self, steps: Steps, where: str) -> Any:
        """The result of ``steps``. An async client on Redis: the steps run here up to their first store request;
        none made, the result itself; else an awaitable of it (aiobotocore awaits what a handler returns on
        ``before-call`` and ``needs-retry``), whose failure is reported and resolves to None."""
        if self.aio_store is None:
            return _drive(steps, self._ask_router)
        try:
            request = next(steps)
        except StopIteration as done:
            return done.value
        return self._decided(steps, request, where)

    async def _decided(self, steps: Steps, request: tuple[str, tuple[Any, ...]], where: str) -> Any:
        try:
            return await _drive_async(steps, self._ask_router_async, request)
        except Exception as exc:
            report_failure(where, exc)
            return None

    # -- before-call: route new calls -----------------------------------------------------------------
    def on_before_call(self, model: Any = None, params: Any = None, context: Any = None, **kwargs: Any) -> Any:
        if self.aio_store is not None:
            return self._on_before_call_async(model, params, context)
        try:
            router = self.router
            if router.wall_clock:
                router.sync(router.now(self.runtime))
            hot = router.hot
            if not hot or not isinstance(params, dict) or _path_segment(params.get("url_path")) not in hot:
                return  # no remembered profile and no opened circuit for this model: one lookup
            current = model_in_path(params.get("url_path", ""))
            if current is None or model is None:
                return
            target, reason = self._preferred(self.scope(params, current), current, model.name)
            if target != current:
                self._move_model(params, call_state(context), current, target, reason)
        except Exception as exc:
            report_failure("before-call (fallbacks)", exc)

    def _on_before_call_async(self, model: Any, params: Any, context: Any) -> Any:
        """:meth:`on_before_call` of an async client on Redis: None at once for a model nothing is known of (no
        fleet sync due), else an awaitable that reads the store, awaited, then routes as the sync path does (and
        resolves to None: any other answer of ``before-call`` would be taken for the response)."""
        try:
            router = self.router
            segment = _path_segment(params.get("url_path")) if isinstance(params, dict) else ""
            if segment not in router.hot and not router.sync_due(router.now(self.runtime)):
                return None  # one lookup, as on the sync path
            return self._decide(self._routing(model, params, context), "before-call (fallbacks)")
        except Exception as exc:
            report_failure("before-call (fallbacks)", exc)
            return None

    def _routing(self, model: Any, params: Any, context: Any) -> Steps:
        router = self.router
        now = router.now(self.runtime)
        if router.sync_due(now):
            yield "sync", (now,)
        hot = router.hot
        if not hot or not isinstance(params, dict) or _path_segment(params.get("url_path")) not in hot:
            return None
        current = model_in_path(params.get("url_path", ""))
        if current is None or model is None:
            return None
        target, reason = yield from self._preferring(self.scope(params, current), current, model.name)
        if target != current:
            self._move_model(params, call_state(context), current, target, reason)
        return None

    def _preferred(self, scope: QuotaScope, model_id: str, operation: str) -> tuple[str, str]:
        return _drive(self._preferring(scope, model_id, operation), self._ask_router)

    def _preferring(self, scope: QuotaScope, model_id: str, operation: str) -> Steps:
        now = self.router.now(self.runtime)
        profile = (yield "remembered_profile", (scope, now)) if self.settings.inference_profiles else None
        if profile:
            return profile, "remembered inference profile"
        if (yield "circuit_open", (scope, now)):
            alternatives = self.router.alternatives(model_id, operation)
            if alternatives:
                return alternatives[0], "circuit open"
        self.router.cool_down(now)
        return model_id, ""

    # -- needs-retry: reroute a call that cannot succeed where it is; say who served a rerouted one -------
    def on_needs_retry(self, attempts: int = 1, request_dict: Any = None, operation: Any = None,
                       response: Any = None, caught_exception: Any = None, **kwargs: Any) -> Any:
        try:
            context = request_dict.get("context") if isinstance(request_dict, dict) else None
            state = context.get(STATE_KEY) if isinstance(context, dict) else None
            if not isinstance(state, CallState):
                return None  # nothing happened to this call: no failure, no route
            if state.classification is None or state.verdict is None:
                if caught_exception is None:
                    self._say_who_served(state, response)
                return None  # a success, or an error the catalog left to botocore
            return self._reroute(attempts, request_dict, operation, state)
        except Exception as exc:
            report_failure("needs-retry (fallbacks)", exc)
            return None

    def _reroute(self, attempts: int, request_dict: dict[str, Any], operation: Any, state: CallState) -> Any:
        """The retry answer (0: retry now, rerouted; None: botocore's own); for an async client on Redis whose
        decision reads the store, an awaitable of it."""
        return self._decide(self._rerouting(attempts, request_dict, operation, state), "needs-retry (fallbacks)")

    def _rerouting(self, attempts: int, request_dict: dict[str, Any], operation: Any, state: CallState) -> Steps:
        if operation is None or operation.name not in ROUTABLE:
            return None
        entry, verdict = state.classification.entry, state.verdict
        current = model_in_path(request_dict.get("url_path", ""))
        if current is None or entry.reroute is None:
            return None
        scope = self.scope(request_dict, current)
        if entry.reroute == "exhausted" and (yield "record_pressure", (scope, self.router.now(self.runtime))):
            logger.warning("bedrock-hooks: circuit opened for %s in %s (%s); new calls go to its first fallback "
                           "for %ss", current, scope.region, entry.name, self.settings.circuit_cooldown)
            telemetry.circuit_changed(self, current, scope.region, "open", entry.name)
        if verdict.retry or (entry.reroute == "exhausted" and verdict.reason not in ("max-attempts", "deadline")):
            return None
        move = yield from self._next_move(entry, current, scope, operation.name, state, request_dict)
        if move is None:
            return None
        kind, target, reason = move
        if kind == "model":
            self._move_model(request_dict, state, current, target, reason)
        else:
            self._move_region(request_dict, state, target, reason)
        state.restart_budget(attempts)  # the new target gets a fresh budget
        return 0

    def _next_move(self, entry: Entry, current: str, scope: QuotaScope, operation: str, state: CallState,
                   request_dict: dict[str, Any]) -> Steps:
        tried_models = {step["from_model"] for step in state.route} | {current}
        if entry.name == "InferenceProfileRequired" and self.settings.inference_profiles:
            profile = profile_for(current, scope.region)
            if profile and profile not in tried_models:
                yield "remember_profile", (scope, profile, self.router.now(self.runtime))
                return "model", profile, entry.name
        for alternative in self.router.alternatives(self._requested(state, current), operation):
            if alternative not in tried_models and alternative != current:
                return "model", alternative, entry.name
        if entry.name == "ServiceUnavailable":
            return self._next_region(scope.region, state, request_dict, entry.name)
        return None

    def _next_region(self, home: str, state: CallState, request_dict: dict[str, Any],
                     reason: str) -> tuple[str, Any, str] | None:
        tried_regions = {step.get("from_region") for step in state.route} | {home}
        for candidate, pinned in self.settings.fallback_regions:
            if candidate in tried_regions:
                continue
            url = regional_url(request_dict.get("url", ""), home, candidate, pinned)
            if url is not None:
                return "region", (candidate, url), reason
            if same_partition(home, candidate):
                why = "the endpoint names no Region; pin one with"
            else:
                why = f"it is not in the AWS partition of {home}; requests stay in their partition unless pinned with"
            note = f"Region failover to {candidate} skipped: {why} BEDROCK_HOOKS_FALLBACK_REGIONS={candidate}=URL."
            if note not in state.notes:
                state.notes.append(note)
                logger.info("bedrock-hooks: %s", note)
        return None

    @staticmethod
    def _requested(state: CallState, current: str) -> str:
        """The model the application asked for: fallback chains are keyed by it, not by an alternative."""
        return state.route[0]["from_model"] if state.route else current

    def _current_region(self, request_dict: dict[str, Any]) -> str:
        signing = (request_dict.get("context") or {}).get("signing") or {}
        return signing.get("region") or self.region

    def _move_model(self, request_dict: dict[str, Any], state: CallState, current: str, target: str,
                    reason: str) -> None:
        request_dict["url_path"] = _with_model(request_dict["url_path"], target)
        if "url" in request_dict:
            request_dict["url"] = _with_model(request_dict["url"], target)
        region = self._current_region(request_dict)
        state.route.append({"from_model": current, "to_model": target, "from_region": region, "to_region": region,
                            "reason": reason})
        state.notes.append(f"bedrock-hooks moved the call from {current} to {target} ({reason}).")
        logger.info("bedrock-hooks: %s -> %s (%s)", current, target, reason)
        telemetry.fallback(self, current, target, region, region, reason, request_dict)

    def _move_region(self, request_dict: dict[str, Any], state: CallState, target: tuple[str, str],
                     reason: str) -> None:
        region, url = target
        current_region = self._current_region(request_dict)
        request_dict["url"] = url
        context = request_dict.setdefault("context", {})
        signing = dict(context.get("signing") or {})
        signing["region"] = region
        context["signing"] = signing
        model = model_in_path(request_dict.get("url_path", "")) or ""
        state.route.append({"from_model": model, "to_model": model, "from_region": current_region,
                            "to_region": region, "reason": reason})
        state.notes.append(f"bedrock-hooks failed over from {current_region} to {region} ({reason}).")
        logger.info("bedrock-hooks: %s failed over %s -> %s (%s)", model, current_region, region, reason)
        telemetry.fallback(self, model, model, current_region, region, reason, request_dict)

    @staticmethod
    def _say_who_served(state: CallState, response: Any) -> None:
        """A rerouted call succeeded: ``response["BedrockHooks"]`` names the model and Region that served it."""
        if not state.route or not isinstance(response, tuple) or len(response) != 2:
            return
        http_response, parsed = response
        if getattr(http_response, "status_code", 200) >= 300 or not isinstance(parsed, dict):
            return  # a final error: the hint (ClientHooks) lists the route from the call state
        last = state.route[-1]
        parsed["BedrockHooks"] = {"served_by": {"model": last["to_model"], "region": last["to_region"]},
                                  "requested_model": state.route[0]["from_model"], "route": list(state.route)}


def feature(client: Any, settings: Settings, runtime: Runtime) -> FallbackHooks | None:
    """Factory for :data:`bedrock_hooks.installation.FEATURES`: only for bedrock-runtime with a reason to act."""
    if client.meta.service_model.service_name != "bedrock-runtime" or not settings.retry:
        return None
    if not (settings.fallbacks or settings.inference_profiles or settings.fallback_regions):
        return None
    return FallbackHooks(client, settings, runtime)
