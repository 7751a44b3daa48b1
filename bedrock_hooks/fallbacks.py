"""Fallbacks: alternative models, inference profiles and Regions, inside botocore's retry loop.

The seed's remedies go beyond retrying the same request: use an alternative model when one is not
found or not accessible, an inference profile when on-demand throughput is not supported, another
Region when 503s persist. This feature does it transparently for ``converse``/``invoke_model``
call sites:

* ``needs-retry`` (registered after :class:`~bedrock_hooks.handlers.ClientHooks`, which keeps the
  first word): when the call's verdict is "stop" and the entry allows a reroute, the request dict is
  pointed at the next alternative (model in the URL path, or Region in the host and the SigV4
  signing Region) and the handler answers "retry now" with a fresh budget for the new target.
* ``before-call``: new calls go straight to a remembered inference profile, or to a model's first
  fallback while its circuit is open.
* ``after-call``: a rerouted success says who served it in ``response["BedrockHooks"]`` (a final
  failure's ``BedrockHooks`` lists the route, from the call state, via the hint).

InvokeModel bodies are provider-specific, so InvokeModel only falls back within the same provider
family unless ``BEDROCK_HOOKS_FALLBACK_CROSS_PROVIDER`` is on; Converse requests may go anywhere.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .catalog import Entry
from .config import Settings
from .failsafe import report_failure
from .features import Registrations, Runtime
from .state import STATE_KEY, CallState, call_state

logger = logging.getLogger("bedrock_hooks.fallbacks")

#: Operations whose model is the ``{modelId}`` label of ``/model/{modelId}/...``.
ROUTABLE = frozenset({"Converse", "ConverseStream", "InvokeModel", "InvokeModelWithResponseStream"})
#: Operations whose request body does not depend on the model's provider.
MODEL_AGNOSTIC = frozenset({"Converse", "ConverseStream"})
#: Region prefix -> geographic cross-Region inference profile prefix, most specific first (data).
PROFILE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("us-gov-", "us-gov"), ("us-", "us"), ("eu-", "eu"), ("ap-", "apac"), ("ca-", "ca"),
)
GEO_PREFIXES = frozenset({"us", "us-gov", "eu", "apac", "ca", "jp", "au", "global"})
_MODEL_IN_PATH = re.compile(r"^(/model/)([^/]+)(/.*)$")
_MAX_TRACKED = 512  # models tracked by the circuit breaker and the upgrade memory, per router


def profile_for(model_id: str, region: str) -> str | None:
    """The geographic inference profile ID for a foundation model in ``region`` (None if unknown)."""
    if model_id.startswith("arn:") or model_id.split(".", 1)[0] in GEO_PREFIXES:
        return None
    for region_prefix, geo in PROFILE_PREFIXES:
        if region.startswith(region_prefix):
            return f"{geo}.{model_id}"
    return None


def provider_family(model_id: str) -> tuple[str, str] | None:
    """``("anthropic", "claude")`` for ``us.anthropic.claude-3-haiku-...``; None for ARNs and unknowns.

    The family is the vendor plus the letters of the model name's first token, so Claude 3 and
    Claude 3.5 share a body format while Amazon Titan and Amazon Nova do not.
    """
    if model_id.startswith("arn:"):
        return None
    parts = model_id.split(".")
    if len(parts) > 2 and parts[0] in GEO_PREFIXES:
        parts = parts[1:]
    if len(parts) < 2:
        return None
    name = re.match(r"[a-z]+", parts[1].lower())
    return (parts[0].lower(), name.group(0)) if name else None


def model_in_path(url_path: str) -> str | None:
    match = _MODEL_IN_PATH.match(url_path or "")
    return unquote(match.group(2)) if match else None


def _with_model(path_or_url: str, model_id: str) -> str:
    parts = urlsplit(path_or_url)
    match = _MODEL_IN_PATH.match(parts.path)
    if not match:
        return path_or_url
    path = f"{match.group(1)}{quote(model_id, safe='-_.~')}{match.group(3)}"
    return urlunsplit(parts._replace(path=path))


def _with_host(url: str, region: str, home: str, endpoint: str | None) -> str:
    parts = urlsplit(url)
    if endpoint:
        target = urlsplit(endpoint)
        return urlunsplit(parts._replace(scheme=target.scheme, netloc=target.netloc))
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f".{home}.", f".{region}.")))


@dataclass
class _Circuit:
    failures: collections.deque
    open_until: float = 0.0


class Router:
    """Process-wide fallback state for one configuration: circuits and remembered profiles."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.chains = dict(settings.fallbacks)
        self._lock = threading.Lock()
        self._circuits: collections.OrderedDict[tuple[str, str], _Circuit] = collections.OrderedDict()
        self._profiles: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()
        #: Becomes True once a profile is remembered or a circuit opens; until then new calls need no routing.
        self.routing = False

    # -- circuit breaker ------------------------------------------------------------------------
    def record_pressure(self, model: str, region: str, now: float) -> bool:
        """Count a throttling/unavailable error; True when this one opened the model's circuit."""
        if self.settings.circuit_threshold <= 0 or not self.chains.get(model):
            return False
        with self._lock:
            circuit = self._circuits.pop((model, region), None) or _Circuit(collections.deque())
            self._circuits[(model, region)] = circuit
            while len(self._circuits) > _MAX_TRACKED:
                self._circuits.popitem(last=False)
            window_start = now - self.settings.circuit_window
            while circuit.failures and circuit.failures[0] < window_start:
                circuit.failures.popleft()
            circuit.failures.append(now)
            if circuit.open_until <= now and len(circuit.failures) >= self.settings.circuit_threshold:
                circuit.open_until = now + self.settings.circuit_cooldown
                circuit.failures.clear()
                self.routing = True
                return True
        return False

    def circuit_open(self, model: str, region: str, now: float) -> bool:
        with self._lock:
            circuit = self._circuits.get((model, region))
            return circuit is not None and circuit.open_until > now

    # -- inference profiles -----------------------------------------------------------------------
    def remember_profile(self, model: str, region: str, profile: str) -> None:
        with self._lock:
            self._profiles[(model, region)] = profile
            self.routing = True
            while len(self._profiles) > _MAX_TRACKED:
                self._profiles.popitem(last=False)

    def remembered_profile(self, model: str, region: str) -> str | None:
        with self._lock:
            return self._profiles.get((model, region))

    # -- alternatives -----------------------------------------------------------------------------
    def alternatives(self, model: str, operation: str) -> list[str]:
        """The configured alternatives for ``model`` that ``operation`` can use, in order."""
        chain = list(self.chains.get(model, ()))
        if operation in MODEL_AGNOSTIC or self.settings.fallback_cross_provider:
            return chain
        family = provider_family(model)
        allowed = [alt for alt in chain if family is not None and provider_family(alt) == family]
        skipped = [alt for alt in chain if alt not in allowed]
        if skipped:
            logger.info("bedrock-hooks: InvokeModel fallbacks %s skipped: another provider family than %s "
                        "(set BEDROCK_HOOKS_FALLBACK_CROSS_PROVIDER=on to allow)", skipped, model)
        return allowed


_routers: dict[Settings, Router] = {}
_routers_lock = threading.Lock()


def router_for(settings: Settings) -> Router:
    """One router per configuration, shared by every client installed with it."""
    with _routers_lock:
        router = _routers.get(settings)
        if router is None:
            router = _routers[settings] = Router(settings)
        return router


def reset_routers() -> None:
    """Forget circuit and profile state (tests; or after changing models in a long-lived process)."""
    with _routers_lock:
        _routers.clear()


class FallbackHooks:
    """The per-client feature."""

    def __init__(self, client: Any, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.router = router_for(settings)
        self.service = client.meta.service_model.service_id.hyphenize()
        self.region = client.meta.region_name or ""
        self.events = client.meta.events
        self._operations = client.meta.service_model.operation_names
        self._client = weakref.ref(client)
        self._registrations = Registrations(self.events)

    def attach(self) -> None:
        """Register per routable operation only, so other calls of the client pay nothing.

        ``needs-retry`` is the exception: botocore calls handlers of more specific event names first,
        and this one must run after :class:`ClientHooks` (service level) has judged the attempt.
        """
        svc = self.service
        self._registrations.add(f"needs-retry.{svc}", self.on_needs_retry, f"bedrock-hooks-fallback-{svc}")
        for operation in sorted(ROUTABLE & set(self._operations)):
            suffix = f"{svc}.{operation}"
            self._registrations.add(f"before-call.{suffix}", self.on_before_call, f"bedrock-hooks-route-{suffix}")
            self._registrations.add(f"after-call.{suffix}", self.on_after_call, f"bedrock-hooks-served-{suffix}")

    def detach(self) -> None:
        self._registrations.remove_all()

    # -- before-call: route new calls -----------------------------------------------------------------
    def on_before_call(self, model: Any = None, params: Any = None, context: Any = None, **kwargs: Any) -> None:
        try:
            if not self.router.routing or model is None or not isinstance(params, dict):
                return  # nothing remembered and no circuit ever opened: the common case costs one read
            current = model_in_path(params.get("url_path", ""))
            if current is None:
                return
            target, reason = self._preferred(current, model.name)
            if target != current:
                state = call_state(context)
                self._move_model(params, state, current, target, reason)
        except Exception as exc:
            report_failure("before-call (fallbacks)", exc)

    def _preferred(self, model_id: str, operation: str) -> tuple[str, str]:
        profile = self.router.remembered_profile(model_id, self.region) if self.settings.inference_profiles else None
        if profile:
            return profile, "remembered inference profile"
        if self.router.circuit_open(model_id, self.region, self.runtime.clock()):
            alternatives = self.router.alternatives(model_id, operation)
            if alternatives:
                return alternatives[0], "circuit open"
        return model_id, ""

    # -- needs-retry: reroute a call that cannot succeed where it is ------------------------------------
    def on_needs_retry(self, attempts: int = 1, request_dict: Any = None, operation: Any = None,
                       **kwargs: Any) -> int | None:
        try:
            return self._reroute(attempts, request_dict, operation)
        except Exception as exc:
            report_failure("needs-retry (fallbacks)", exc)
            return None

    def _reroute(self, attempts: int, request_dict: Any, operation: Any) -> int | None:
        if operation is None or operation.name not in ROUTABLE or not isinstance(request_dict, dict):
            return None
        state = (request_dict.get("context") or {}).get(STATE_KEY)
        if not isinstance(state, CallState) or state.classification is None or state.verdict is None:
            return None  # a success, or an error the catalog left to botocore
        classification, verdict = state.classification, state.verdict
        entry = classification.entry
        current = model_in_path(request_dict.get("url_path", ""))
        if current is None or entry.reroute is None:
            return None
        region = self._current_region(request_dict)
        if entry.reroute == "exhausted" and self.router.record_pressure(current, region, self.runtime.clock()):
            logger.warning("bedrock-hooks: circuit opened for %s in %s (%s); new calls go to its first fallback "
                           "for %ss", current, region, entry.name, self.settings.circuit_cooldown)
        if verdict.retry or (entry.reroute == "exhausted" and verdict.reason not in ("max-attempts", "deadline")):
            return None
        move = self._next_move(entry, current, region, operation.name, state)
        if move is None:
            return None
        kind, target, reason = move
        if kind == "model":
            self._move_model(request_dict, state, current, target, reason)
        else:
            self._move_region(request_dict, state, target, reason)
        state.attempt_offset = -attempts  # the new target gets a fresh budget
        state.first_failure = None
        state.reconnected = False
        return 0

    def _next_move(self, entry: Entry, current: str, region: str, operation: str,
                   state: CallState) -> tuple[str, Any, str] | None:
        tried_models = {step["from_model"] for step in state.route} | {current}
        if entry.name == "InferenceProfileRequired" and self.settings.inference_profiles:
            profile = profile_for(current, region)
            if profile and profile not in tried_models:
                self.router.remember_profile(current, self.region, profile)
                return "model", profile, entry.name
        for alternative in self.router.alternatives(self._requested(state, current), operation):
            if alternative not in tried_models and alternative != current:
                return "model", alternative, entry.name
        if entry.name == "ServiceUnavailable":
            tried_regions = {step.get("from_region") for step in state.route} | {region}
            for candidate, endpoint in self.settings.fallback_regions:
                if candidate not in tried_regions:
                    return "region", (candidate, endpoint), entry.name
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

    def _move_region(self, request_dict: dict[str, Any], state: CallState, target: tuple[str, str | None],
                     reason: str) -> None:
        region, endpoint = target
        current_region = self._current_region(request_dict)
        request_dict["url"] = _with_host(request_dict["url"], region, current_region, endpoint)
        context = request_dict.setdefault("context", {})
        signing = dict(context.get("signing") or {})
        signing["region"] = region
        context["signing"] = signing
        model = model_in_path(request_dict.get("url_path", "")) or ""
        state.route.append({"from_model": model, "to_model": model, "from_region": current_region,
                            "to_region": region, "reason": reason})
        state.notes.append(f"bedrock-hooks failed over from {current_region} to {region} ({reason}).")
        logger.info("bedrock-hooks: %s failed over %s -> %s (%s)", model, current_region, region, reason)

    # -- after-call: say who served it ------------------------------------------------------------
    def on_after_call(self, http_response: Any = None, parsed: Any = None, context: Any = None,
                      **kwargs: Any) -> None:
        try:
            state = context.get(STATE_KEY) if isinstance(context, dict) else None
            if not isinstance(parsed, dict) or not isinstance(state, CallState) or not state.route:
                return
            if getattr(http_response, "status_code", 200) >= 300:
                return  # a final error: the hint (ClientHooks) lists the route from the call state
            last = state.route[-1]
            parsed["BedrockHooks"] = {"served_by": {"model": last["to_model"], "region": last["to_region"]},
                                      "requested_model": state.route[0]["from_model"], "route": list(state.route)}
        except Exception as exc:
            report_failure("after-call (fallbacks)", exc)


def feature(client: Any, settings: Settings, runtime: Runtime) -> FallbackHooks | None:
    """Factory for :data:`bedrock_hooks.installation.FEATURES`: only for bedrock-runtime with a reason to act."""
    if client.meta.service_model.service_name != "bedrock-runtime" or not settings.retry:
        return None
    if not (settings.fallbacks or settings.inference_profiles or settings.fallback_regions):
        return None
    return FallbackHooks(client, settings, runtime)
