"""``bedrock-hooks explain``: which catalog entry an error is, and what the library will do with it.

Two questions, answered with the library's own code rather than a description of it:

* **Which entry?** What people paste (a code, a status, a message, botocore's whole
  ``An error occurred (X) when calling the Y operation: ...`` line, an exception class name) is
  turned into :class:`~bedrock_hooks.classification.ErrorFacts` and handed to
  :func:`~bedrock_hooks.classification.classify`, the function the handlers call on the wire.
* **What happens?** :func:`behaviour` reads the effective settings (``BEDROCK_HOOKS_*``) and runs
  the retry policy's own ``decide`` on a sequence of identical failures (once with the shortest and
  once with the longest random sleeps), then adds what the other features do with the entry:
  inference profiles, configured fallbacks, Region failover, stream re-issue, hints. So the answer
  changes when the settings change, and cannot drift from the policy it describes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import fallbacks
from .catalog import ENTRIES, Backoff, Decision, Entry, Remedy
from .classification import Classification, ErrorFacts, classify, parse_wait
from .config import Settings, load_settings
from .hints import HintFacts, build_info, hint_line
from .policy import Reason, RetryPolicy, Verdict, resend_is_safe
from .reference import recognised_by
from .state import RetryState

_BOTOCORE_ERROR = re.compile(r"An error occurred \(([^)]+)\) when calling the (\w+) operation[^:]*:\s*(.*)", re.S)
_TOKEN = re.compile(r"^[A-Za-z][\w.:#/-]*$")
#: "Invocation of model ID anthropic.claude-... with on-demand throughput isn't supported."
_MODEL_ID = re.compile(r"\bmodel ID ([A-Za-z0-9][\w.:/-]*\w)")
#: A code no service sends: with it, a message pasted alone is classified as an error response
#: carrying that message (classify() reads message patterns only when a code or status came too).
_NO_CODE = "(none)"
#: Streaming operations whose mid-stream errors the stream feature may re-issue.
STREAM_OPERATIONS = frozenset({"ConverseStream", "InvokeModelWithResponseStream"})


@dataclass(frozen=True)
class Call:
    """What is known about the call that failed; every field is optional."""

    operation: str | None = None
    model: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Explanation:
    """A recognised error: its catalog entry, how it was recognised and the call it came from."""

    entry: Entry
    matched_by: str
    classification: Classification
    call: Call = Call()


@dataclass(frozen=True)
class Behaviour:
    """What the library does with one error under one configuration.

    ``attempts`` is how many times the request is sent to its first target at most (1: never
    retried; None: botocore decides), ``delays`` the longest sleep before each retry, ``reroutes``
    the models or Regions the call may move to, in order.
    """

    steps: tuple[str, ...]
    handled_by: str = "bedrock-hooks"
    attempts: int | None = 1
    delays: tuple[float, ...] = ()
    reroutes: tuple[str, ...] = ()
    retry_after: float | None = None
    hint: bool = False
    stream_reissue: bool | None = None  #: inside a stream (after its 200), re-issued before content arrives


# -- which entry ---------------------------------------------------------------------------------

def explain_lookup(text: str = "", *, status: int | None = None, code: str | None = None,
                   operation: str | None = None, model: str | None = None,
                   region: str | None = None) -> Explanation | None:
    """The catalog entry for an error code, an entry name, a message, an exception name or a status."""
    text = (text or "").strip()
    message = text
    parsed = _BOTOCORE_ERROR.search(text)
    if parsed:
        code, operation, message = code or parsed.group(1), operation or parsed.group(2), parsed.group(3).strip()
    elif text.isdigit() and status is None:
        status, message = int(text), ""
    elif _TOKEN.match(text) and code is None:
        return _lookup_word(text, status, Call(operation, model, region))
    found_model = _MODEL_ID.search(message)
    call = Call(operation, model or (found_model.group(1) if found_model else None), region)
    facts = ErrorFacts(status=status, code=code or (_NO_CODE if message and status is None else None), message=message)
    return _explained(facts, call)


def _lookup_word(word: str, status: int | None, call: Call) -> Explanation | None:
    """A single word: an error code, else an entry name, an exception class, a message fragment."""
    found = _explained(ErrorFacts(status=status, code=word), call)
    if found is not None:
        return found
    for entry in ENTRIES:
        if entry.name.lower() == word.lower():
            facts = ErrorFacts(status=status or entry.status, message=entry.name)
            return Explanation(entry, f"entry name {entry.name!r}", Classification(entry, facts, entry.retry_after),
                               call)
    exception = type(word, (Exception,), {})(word)  # an exception of that class, as botocore would raise it
    found = _explained(ErrorFacts(exception=exception), call)
    if found is not None:
        return dataclasses.replace(found, matched_by=f"exception class {word!r} (no HTTP response)")
    return _explained(ErrorFacts(code=_NO_CODE, message=word), call)


def _explained(facts: ErrorFacts, call: Call) -> Explanation | None:
    classification = classify(facts)
    if classification is None:
        return None
    return Explanation(classification.entry, _matched_by(classification.entry, facts), classification, call)


def _matched_by(entry: Entry, facts: ErrorFacts) -> str:
    """Which of the facts decided: asked of classify() itself, one fact at a time."""
    by_message = classify(ErrorFacts(code=_NO_CODE, message=facts.message)) if facts.message else None
    if by_message is not None and by_message.entry is entry:
        return "message pattern"
    if facts.code and facts.code != _NO_CODE:
        by_code = classify(ErrorFacts(code=facts.code))
        if by_code is not None and by_code.entry is entry:
            return f"error code {facts.code!r}"
    if facts.status is not None:
        return f"HTTP status {facts.status}"
    return "exception class"


# -- what happens ---------------------------------------------------------------------------------

class _Extreme(random.Random):
    """A random source stuck at one end, to run the policy with its shortest or longest sleeps."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self._value = value

    def random(self) -> float:
        return self._value


_LONGEST, _SHORTEST = _Extreme(1.0 - 1e-12), _Extreme(0.0)


def retry_verdicts(policy: RetryPolicy, classification: Classification, *, remedy_ready: bool = True,
                   resend_safe: bool = True, rng: random.Random = _LONGEST) -> list[Verdict]:
    """The policy's verdicts for a call whose every attempt fails the same way (sleeps taken from ``rng``).

    No retry quota is charged: one call never spends it (an outage of many calls does, and then stops early).
    """
    verdicts: list[Verdict] = []
    state, now = RetryState(), 0.0
    while True:
        verdict, state = policy.decide(classification, state.at(len(verdicts) + 1), now, resend_safe=resend_safe,
                                       remedy=lambda: remedy_ready, rng=rng)
        verdicts.append(verdict)
        if not verdict.retry:
            return verdicts
        now += verdict.delay


def behaviour(found: Explanation, settings: Settings) -> Behaviour:
    """What the library does with ``found`` under ``settings``, step by step."""
    service = _service(found.call.operation)
    if not settings.enabled:
        return Behaviour(("nothing: bedrock-hooks is switched off (BEDROCK_HOOKS_ENABLED); botocore alone handles "
                          "this error, as without the library.",), handled_by="botocore", attempts=None)
    if service not in settings.services:
        return Behaviour((f"nothing: {service} is not in BEDROCK_HOOKS_SERVICES ({','.join(settings.services)}); "
                          "botocore alone handles this error.",), handled_by="botocore", attempts=None)
    steps: list[str] = []
    if settings.retry:
        attempts, delays = _retry_steps(found, settings, steps)
        reroutes = _reroute_steps(found, settings, steps)
    else:
        steps.append("retry decisions are off (BEDROCK_HOOKS_RETRY=off): botocore's own retry handler decides "
                     "whether to send it again (AWS_RETRY_MODE, Config(retries=...)), as without the library; "
                     "no inference profile or fallback is tried.")
        attempts, delays, reroutes = None, (), ()
    _pacing_steps(found, settings, steps)
    stream_reissue = _stream_steps(found, settings, steps)
    retry_after = _final_steps(found, settings, attempts, steps)
    return Behaviour(tuple(steps), "bedrock-hooks" if settings.retry else "botocore", attempts, delays, reroutes,
                     retry_after, settings.hints, stream_reissue)


def _retry_steps(found: Explanation, settings: Settings, steps: list[str]) -> tuple[int, tuple[float, ...]]:
    entry = found.entry
    if entry.decision is Decision.FAIL:
        steps.append("never retried as it is: sending the same request again cannot succeed (even where botocore "
                     "would retry it).")
        return 1, ()
    if entry.decision is Decision.WAIT:
        steps.append("not retried now: this condition clears only after minutes, which no call should sleep.")
        return 1, ()
    policy = RetryPolicy.from_settings(settings)
    remedy_ready = _remedy_ready(entry, settings, steps)
    resend_safe = _resend_safe(found, steps)
    longest = retry_verdicts(policy, found.classification, remedy_ready=remedy_ready, resend_safe=resend_safe)
    shortest = retry_verdicts(policy, found.classification, remedy_ready=remedy_ready, resend_safe=resend_safe,
                              rng=_SHORTEST)
    if not [v for v in shortest if v.retry]:
        steps.append(f"not retried: {_stop_reason(shortest[-1], policy, entry, settings)}.")
        return 1, ()
    most = len(shortest)
    if len(longest) < most:
        steps.append(f"retried: sent at most {most} times in all, as few as {len(longest)} when the random sleeps are "
                     f"long, since no sleep may end more than {settings.retry_deadline:g} s after the first failure "
                     "(BEDROCK_HOOKS_RETRY_DEADLINE).")
    else:
        steps.append(f"retried: sent at most {most} times in all ({_stop_reason(shortest[-1], policy, entry, settings)}).")
    # The longest sleep before each retry the shortest-sleep run makes, without the deadline cutting it short.
    ceilings = [v for v in retry_verdicts(dataclasses.replace(policy, deadline=math.inf), found.classification,
                                          remedy_ready=remedy_ready, resend_safe=resend_safe) if v.retry]
    steps.extend(_describe_retries(ceilings, entry, settings))
    return most, tuple(round(v.delay, 3) for v in ceilings)


def _remedy_ready(entry: Entry, settings: Settings, steps: list[str]) -> bool:
    if entry.remedy is Remedy.CLOCK_SKEW:
        if settings.fix_clock_skew:
            steps.append("measures the clock offset from the response's Date header and corrects this client's "
                         "signing clock (BEDROCK_HOOKS_FIX_CLOCK_SKEW=on); without a Date header it cannot.")
            return True
        steps.append("the signing clock is not corrected (BEDROCK_HOOKS_FIX_CLOCK_SKEW=off).")
        return False
    if entry.remedy is Remedy.REFRESH_CREDENTIALS:
        if settings.refresh_credentials:
            steps.append("forces a refresh of refreshable credentials (role, SSO, credential_process) "
                         "(BEDROCK_HOOKS_REFRESH_CREDENTIALS=on); static keys and a fixed session token cannot "
                         "refresh, and then it is not retried.")
            return True
        steps.append("credentials are not refreshed (BEDROCK_HOOKS_REFRESH_CREDENTIALS=off).")
        return False
    return True


def _resend_safe(found: Explanation, steps: list[str]) -> bool:
    if not found.entry.ambiguous:
        return True
    operation = _operation_model(found.call.operation)
    if operation is None:
        steps.append("the request may already have been processed: it is sent again only when that is safe "
                     "(reads and model invocations, or operations with an idempotency token).")
        return True
    safe = resend_is_safe(operation)
    if not safe:
        steps.append(f"{operation.name} changes resources and has no idempotency token: after this failure it may "
                     "already have been applied, so it is not sent again.")
    return safe


def _describe_retries(retries: list[Verdict], entry: Entry, settings: Settings) -> list[str]:
    lines = []
    first = retries[0].reason
    if first == "reconnect":
        lines.append("retry 1 at once, on a fresh connection (the old one is presumed dead).")
    elif first == "remedy":
        lines.append("the retry goes out at once, after the repair.")
    waits = [v.delay for v in retries if v.reason == "backoff"]
    if waits:
        throttle = entry.backoff is Backoff.THROTTLE
        base = settings.throttle_backoff_base if throttle else settings.backoff_base
        variable = "BEDROCK_HOOKS_THROTTLE_BACKOFF_BASE" if throttle else "BEDROCK_HOOKS_BACKOFF_BASE"
        shown = ", ".join(f"{w:.3g}" for w in waits)
        lines.append(f"{'then, before each further retry' if len(waits) < len(retries) else 'before each retry'}, "
                     "a random sleep of up to "
                     f"{shown} s ({'throttling ' if throttle else ''}backoff with full jitter: {variable}={base:g} s, "
                     f"doubling, at most BEDROCK_HOOKS_BACKOFF_CAP={settings.backoff_cap:g} s); a Retry-After or "
                     f"x-amz-retry-after header of at most {settings.backoff_cap:g} s replaces it.")
    lines.append("each retry is paid from the client's retry quota, shared with botocore's own retries: in an "
                 "outage retrying stops once it is spent, as in plain botocore's standard mode.")
    return lines


def _pacing_steps(found: Explanation, settings: Settings, steps: list[str]) -> None:
    """Throttling answers feed the process-wide rate limiter, whoever decides the retries."""
    if found.entry.backoff is Backoff.THROTTLE and found.entry.decision is Decision.RETRY:
        if settings.rate_limit:
            steps.append("throttling answers feed the process-wide rate limiter, which paces the quota's tokens per "
                         "minute once 429s are a large share of its answers (BEDROCK_HOOKS_RATE_LIMIT=on).")
        else:
            steps.append("no process-wide pacing (BEDROCK_HOOKS_RATE_LIMIT=off).")


def _stop_reason(verdict: Verdict, policy: RetryPolicy, entry: Entry, settings: Settings) -> str:
    reason = Reason(verdict.reason)
    if reason is Reason.MAX_ATTEMPTS:
        return _attempts_source(policy, entry, settings)
    return _STOPS.get(reason, reason.value).format(deadline=settings.retry_deadline)


def _attempts_source(policy: RetryPolicy, entry: Entry, settings: Settings) -> str:
    """Where the attempt limit of ``entry`` comes from: the entry, the variable, or the defaults."""
    limit = policy.attempt_limit(entry)
    if entry.max_attempts and entry.max_attempts == limit and limit < policy.max_attempts:
        return f"this error allows at most {entry.max_attempts} attempts"
    if limit < policy.max_attempts:
        return (f"{limit} attempts for errors other than throttling, as botocore's standard mode, so an outage "
                "costs no more requests than without the library; BEDROCK_HOOKS_MAX_ATTEMPTS or a client's "
                "Config(retries={'max_attempts': N}) sets every error's count")
    source = ("set by BEDROCK_HOOKS_MAX_ATTEMPTS" if settings.explicitly_set("max_attempts") else
              "the default; a client's own Config(retries={'max_attempts': N}) wins while "
              "BEDROCK_HOOKS_MAX_ATTEMPTS is unset")
    return f"BEDROCK_HOOKS_MAX_ATTEMPTS={limit}, {source}"


#: Why a call stops retrying, in words (``{deadline}`` is BEDROCK_HOOKS_RETRY_DEADLINE).
_STOPS = {
    Reason.DEADLINE: "BEDROCK_HOOKS_RETRY_DEADLINE={deadline:g} s",
    Reason.REMEDY_USED: "the repair is tried once per call",
    Reason.REMEDY_UNAVAILABLE: "the repair is not available",
    Reason.NOT_IDEMPOTENT: "it may already have been applied",
    Reason.RETRY_QUOTA: "the client's retry quota is spent",
}


def _reroute_steps(found: Explanation, settings: Settings, steps: list[str]) -> tuple[str, ...]:
    """Inference profile, configured fallback models and Regions: what the fallback feature may try."""
    entry, call = found.entry, found.call
    if entry.reroute is None or (call.operation is not None and call.operation not in fallbacks.ROUTABLE):
        return ()
    when = "at once" if entry.reroute == "now" else "when the retries are spent"
    targets: list[str] = []
    if entry.name == "InferenceProfileRequired":
        targets.extend(_profile_step(call, settings, steps))
    model = call.model
    router = fallbacks.Router(settings)
    if model is not None:
        alternatives = [a for a in router.alternatives(model, call.operation or "Converse") if a not in targets]
        if alternatives:
            profiles = bool(entry.name == "InferenceProfileRequired" and settings.inference_profiles and call.region)
            steps.append(f"{'then ' if targets else ''}{when}, the same request goes to {', then '.join(alternatives)}, "
                         "each with a fresh retry budget (BEDROCK_HOOKS_FALLBACKS)"
                         + (", and each through its own inference profile if it answers the same." if profiles else "."))
            for alternative in alternatives:
                profile = fallbacks.profile_for(alternative, call.region or "") if profiles else None
                targets.extend([alternative, profile] if profile and profile not in targets else [alternative])
        else:
            steps.append(f"no fallback model configured for {model} (BEDROCK_HOOKS_FALLBACKS).")
    elif settings.fallbacks:
        configured = ", ".join(m for m, _ in settings.fallbacks)
        steps.append(f"{when}, the same request goes to the model's alternatives if BEDROCK_HOOKS_FALLBACKS has a "
                     f"chain for it (configured for: {configured}), each with a fresh retry budget.")
    else:
        steps.append("no fallback models are configured (BEDROCK_HOOKS_FALLBACKS is empty).")
    if entry.reroute == "exhausted" and settings.fallbacks and settings.circuit_threshold:
        steps.append(f"{settings.circuit_threshold} such errors on one model within {settings.circuit_window:g} s open "
                     f"its circuit: new calls go straight to its first fallback for {settings.circuit_cooldown:g} s "
                     "(BEDROCK_HOOKS_CIRCUIT_*).")
    if entry.name == "ServiceUnavailable" and settings.fallback_regions:
        regions = [region for region, _ in settings.fallback_regions if region != call.region]
        targets.extend(regions)
        steps.append(f"after the model alternatives, the same request in Region {', then '.join(regions)}, signed "
                     "for that Region (BEDROCK_HOOKS_FALLBACK_REGIONS).")
    return tuple(targets)


def _profile_step(call: Call, settings: Settings, steps: list[str]) -> list[str]:
    if not settings.inference_profiles:
        steps.append("no inference profile is tried (BEDROCK_HOOKS_INFERENCE_PROFILES=off).")
        return []
    if call.model is None or call.region is None:
        missing = " and ".join(n for n, v in (("model ID", call.model), ("Region", call.region)) if v is None)
        steps.append("re-sent once, at once, to the model's cross-Region inference profile for the client's Region "
                     "(us./eu./apac./us-gov./ca. prefix) and remembered: later calls of the model go straight to it "
                     f"(BEDROCK_HOOKS_INFERENCE_PROFILES=on; pass --model/--region, {missing} unknown here).")
        return ["<inference profile>"]
    profile = fallbacks.profile_for(call.model, call.region)
    if profile is None:
        steps.append(f"no inference profile is known for {call.model} in {call.region} (already a profile or an "
                     "ARN, or a Region without a geographic prefix): not re-sent there.")
        return []
    steps.append(f"re-sent once, at once, to the inference profile {profile} and remembered: later calls of "
                 f"{call.model} in {call.region} go straight to it (BEDROCK_HOOKS_INFERENCE_PROFILES=on).")
    return [profile]


def _stream_steps(found: Explanation, settings: Settings, steps: list[str]) -> bool | None:
    """Errors that arrive inside a stream, after its 200: whether the stream feature re-issues the call."""
    operation = found.call.operation
    if operation is not None and operation not in STREAM_OPERATIONS:
        return None
    where = f"a {operation}" if operation else "a ConverseStream/InvokeModelWithResponseStream"
    if found.entry.decision is not Decision.RETRY:
        if operation is not None:
            steps.append(f"inside {where} stream (after its 200): raised, never re-issued.")
        return False
    if not (settings.retry and settings.stream_retry):
        switch = "BEDROCK_HOOKS_RETRY=off" if not settings.retry else "BEDROCK_HOOKS_STREAM_RETRY=off"
        steps.append(f"inside {where} stream (after its 200): raised, never re-issued ({switch}).")
        return False
    steps.append(f"inside {where} stream (after its 200): re-issued with the same parameters and the same attempt "
                 "budget while no content has reached the application, never after (it would duplicate the answer) "
                 "(BEDROCK_HOOKS_STREAM_RETRY=on).")
    return True


def _final_steps(found: Explanation, settings: Settings, attempts: int | None, steps: list[str]) -> float | None:
    """The error the application finally gets, and the retry_after it carries (the hint's own dict)."""
    if not settings.hints:
        steps.append("the error the application finally gets is botocore's, its message untouched "
                     "(BEDROCK_HOOKS_HINTS=off).")
        return None
    info = build_info(found.classification, HintFacts(attempts=attempts))
    steps.append(f"the error the application finally gets ends with this line (BEDROCK_HOOKS_HINTS=on):\n"
                 f"      {hint_line(info)}")
    retry_after = info.get("retry_after")
    if retry_after:
        stated = parse_wait(found.classification.facts.message)
        source = "stated in the message" if stated == retry_after else "the documented wait for this condition"
        when = ("when a fix of the cause has taken effect" if found.entry.decision is Decision.FAIL
                else "when to try again")
        steps.append(f"error.response['BedrockHooks']['retry_after'] is {retry_after:g} s ({source}): {when}.")
    return retry_after


_models: dict[str, Any] = {}


def _operation_model(operation: str | None) -> Any:
    """botocore's model of ``operation`` in a Bedrock service (None if unknown here)."""
    if operation is None:
        return None
    for service in ("bedrock-runtime", "bedrock"):
        try:
            if service not in _models:
                import botocore.loaders
                import botocore.model

                _models[service] = botocore.model.ServiceModel(
                    botocore.loaders.create_loader().load_service_model(service, "service-2"), service)
            if operation in _models[service].operation_names:
                return _models[service].operation_model(operation)
        except Exception:
            continue
    return None


def _service(operation: str | None) -> str:
    model = _operation_model(operation)
    return model.service_model.service_name if model is not None else "bedrock-runtime"


# -- text -----------------------------------------------------------------------------------------

def render_explanation(found: Explanation, settings: Settings | None = None) -> str:
    """The entry, how it was recognised, and what the library does with it under ``settings``."""
    entry = found.entry
    settings = settings if settings is not None else load_settings()
    http = f"HTTP {entry.status}" if entry.status else "no HTTP response"
    lines = [f"{entry.name} ({http}; decision: {entry.decision.value})",
             f"Matched by: {found.matched_by}",
             f"Recognised by: {recognised_by(entry)}",
             f"Cause: {entry.cause}",
             "Solution:"]
    lines.extend(f"  - {step}" for step in entry.solution)
    lines.append(f"What bedrock-hooks does with it, with the current settings{_about(found.call)}:")
    lines.extend(f"  - {step}" for step in behaviour(found, settings).steps)
    return "\n".join(lines)


def _about(call: Call) -> str:
    known = [f"{name} {value}" for name, value in (("operation", call.operation), ("model", call.model),
                                                   ("Region", call.region)) if value]
    return f" ({', '.join(known)})" if known else ""


def default_region(environ: Mapping[str, str] | None = None) -> str | None:
    """The Region a client created here would use, from the environment (the profile is not read)."""
    env = os.environ if environ is None else environ
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None


__all__ = ["Behaviour", "Call", "Explanation", "behaviour", "explain_lookup", "render_explanation",
           "retry_verdicts", "default_region"]
