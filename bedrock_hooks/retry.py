"""The event handlers one Bedrock client carries, and their attachment to its event emitter.

Per client, :class:`ClientHooks` registers:

* ``needs-retry.<service>`` in place of the handler in botocore's own ``retry-config-<service>``
  slot (taken over only when verified): the catalog decides known errors (:meth:`RetryPolicy.decide`,
  paid from the client's retry quota: :mod:`.budget`); unknown errors are handed to botocore's
  original retry handler (legacy, standard or adaptive), which keeps its own quota and rate
  bookkeeping; a success costs two attribute reads and a header lookup (a 2xx cut short of its
  ``Content-Length`` is a failed attempt, not a success).
* ``after-call.<service>`` / ``after-call-error.<service>``: the hint on a final failure.
* ``before-sign.<service>`` / ``before-send.<service>``: arm and disarm a measured clock correction.

Nothing wraps the client: detaching restores botocore's own handler in its slot.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from . import aio, remedies, telemetry
from .budget import budget_for
from .catalog import Decision, Remedy
from .classification import Classification, facts_from_exception, facts_from_parsed, facts_from_success
from .config import Settings
from .hints import HintFacts, annotate_exception, append_hint, build_info, hint_line
from .failsafe import report_failure, safe_invoke
from .features import ClientFeature, Runtime
from .policy import BUDGET_SPENT, Reason, RetryPolicy, Verdict, resend_is_safe
from .retry_slot import botocore_retry_handler, find_botocore_retry_handler
from .state import CallState, call_state, classify_attempt, existing_state

logger = logging.getLogger("bedrock_hooks.retry")

_DELEGATE = object()
#: Said in every hint while retry decisions are off.
RETRY_OFF_NOTE = "Retries were botocore's own (BEDROCK_HOOKS_RETRY=off)."


_refusals: set[str] = set()


class ClientHooks(ClientFeature):
    """Everything bedrock-hooks registers on one client, and how to take it off again."""

    def __init__(self, client: Any, settings: Settings, runtime: Runtime | None = None) -> None:
        super().__init__(client, settings, runtime)
        self.policy = RetryPolicy.for_client(settings, client)
        self.budget = budget_for(client)  #: the client's retry quota, shared with its streams
        self.clock_offset = 0.0
        self._botocore_retry: Callable[..., Any] | None = None
        self._took_slot = False
        #: Why botocore's retry slot was not taken over (``doctor`` shows it); None when it was.
        self.retry_refusal: str | None = None

    # -- attachment -----------------------------------------------------------------------------
    def attach(self) -> None:
        if self.settings.retry:
            self._take_over_retries()
        else:
            self._guard_cut_answers()
        if self.is_async:  # the OpenTelemetry import now, not inside the event loop's first retry decision
            safe_invoke("telemetry setup", telemetry.prepare, self.settings)
        svc = self.service  # the hint and the final failure's log line and telemetry (hints off: no hint)
        self._registrations.add(f"after-call.{svc}", self.on_after_call, f"bedrock-hooks-hint-{svc}")
        self._registrations.add(f"after-call-error.{svc}", self.on_after_call_error, f"bedrock-hooks-hint-error-{svc}")

    def _take_over_retries(self) -> None:
        """Decide retries in place of botocore's handler, which stays reachable for what we do not know.

        Ours is registered (first) *before* botocore's is taken out, so at every instant some retry
        handler is registered; if botocore's handler cannot be verified, nothing is registered or
        removed and the client keeps botocore's retries (:attr:`retry_refusal` says why).
        """
        svc = self.service
        handler, self.retry_refusal = find_botocore_retry_handler(self.events, svc)
        if handler is None:
            if self.retry_refusal not in _refusals:
                _refusals.add(self.retry_refusal)
                logger.warning("bedrock-hooks: %s; %s clients keep botocore's own retries", self.retry_refusal, svc)
            return
        self._botocore_retry = handler
        self._registrations.add(f"needs-retry.{svc}", self.on_needs_retry, f"bedrock-hooks-retry-{svc}", first=True)
        self.events.unregister(f"needs-retry.{svc}", handler, unique_id=f"retry-config-{svc}")
        self._took_slot = True

    def _guard_cut_answers(self) -> None:
        """Retry decisions off: botocore's handler decides, but a cut 2xx is never the application's answer.

        botocore 1.43.115+ no longer notices a non-streaming body shorter than its Content-Length; older
        botocore raised ``ConnectionClosedError`` for it and retried that as its retry mode says. A handler
        ahead of botocore's (which stays in its slot) restores exactly that (:meth:`on_cut_answer`).
        """
        svc = self.service
        self._botocore_retry = botocore_retry_handler(self.events, svc)  # consulted, never unregistered
        self._registrations.add(f"needs-retry.{svc}", self.on_cut_answer, f"bedrock-hooks-cut-answer-{svc}", first=True)

    def detach(self) -> None:
        if self._took_slot:  # botocore's handler back in its slot first, then ours out: no gap
            svc = self.service
            self.events.register(f"needs-retry.{svc}", self._botocore_retry, unique_id=f"retry-config-{svc}")
            self._took_slot = False  # _botocore_retry stays: a call still inside our handler delegates to it
        self._registrations.remove_all()
        remedies.disable_clock_patch(self)

    # -- needs-retry ----------------------------------------------------------------------------
    def on_needs_retry(self, response: Any = None, attempts: int = 1, caught_exception: BaseException | None = None,
                       request_dict: dict[str, Any] | None = None, operation: Any = None,
                       **kwargs: Any) -> Any:
        """Decide known Bedrock errors; delegate everything else to botocore's own handler.

        The answer is botocore's (a delay, 0 or None); for an async client a retry is a coroutine,
        which aiobotocore's emitter awaits: it sleeps the backoff without blocking the event loop.
        """
        deferred: list[Callable[[], Awaitable[bool]]] = []  # async remedies, awaited before the retry
        try:
            verdict = self._decide(response, attempts, caught_exception, request_dict, operation, deferred)
        except Exception as exc:
            report_failure("needs-retry", exc)
            verdict = _DELEGATE
        if verdict is None:
            return None  # a success: nothing to decide
        if verdict is _DELEGATE:
            if self._botocore_retry is None:
                return None
            return self._botocore_retry(response=response, attempts=attempts, caught_exception=caught_exception,
                                        request_dict=request_dict, operation=operation, **kwargs)
        if not verdict.retry:
            cut = safe_invoke("needs-retry", _cut_short, response, request_dict)
            if cut is not None:
                raise cut  # never hand the application a truncated 200: botocore's own error for a cut body
            return None
        if self.is_async:
            return self._retry_async(verdict.delay, deferred, request_dict)
        return self._sleep(verdict.delay)

    def on_cut_answer(self, response: Any = None, attempts: int = 1, caught_exception: BaseException | None = None,
                      request_dict: dict[str, Any] | None = None, operation: Any = None, **kwargs: Any) -> Any:
        """With retry decisions off: botocore's own handler is asked about a cut 2xx as about the closed
        connection older botocore reported for it; when it does not retry, botocore's error is raised."""
        cut = safe_invoke("needs-retry", _cut_answer, response, operation) if caught_exception is None else None
        if cut is None:
            return None  # botocore's handler, next in line, decides as always
        if self.is_async:
            return self._cut_answer_async(cut, attempts, request_dict, operation, **kwargs)
        if self._botocore_retry is not None:
            from botocore.exceptions import ConnectionClosedError

            url = request_dict.get("url") if isinstance(request_dict, dict) else None
            closed = ConnectionClosedError(endpoint_url=url or "", error=cut)
            try:
                delay = self._botocore_retry(response=None, attempts=attempts, caught_exception=closed,
                                             request_dict=request_dict, operation=operation, **kwargs)
            except ConnectionClosedError as raised:  # legacy mode re-raises the exception it gave up on
                if raised is not closed:
                    raise
                delay = None
            if delay is not None and delay is not False:
                return delay
        raise cut  # never hand the application a truncated 200: botocore's own error for a cut body

    async def _cut_answer_async(self, cut: BaseException, attempts: int, request_dict: Any, operation: Any,
                                **kwargs: Any) -> Any:
        """:meth:`on_cut_answer` for an async client, whose botocore handler (aiobotocore's) is a coroutine."""
        if self._botocore_retry is not None:
            from botocore.exceptions import ConnectionClosedError

            url = request_dict.get("url") if isinstance(request_dict, dict) else None
            closed = ConnectionClosedError(endpoint_url=url or "", error=cut)
            try:
                delay = await aio.resolve(self._botocore_retry(response=None, attempts=attempts,
                                                               caught_exception=closed, request_dict=request_dict,
                                                               operation=operation, **kwargs))
            except ConnectionClosedError as raised:
                if raised is not closed:
                    raise
                delay = None
            if delay is not None and delay is not False:
                return delay
        raise cut

    async def _retry_async(self, delay: float, deferred: list[Callable[[], Awaitable[bool]]],
                           request_dict: Any) -> float | None:
        """An async client's retry: await the remedy, then the backoff (``Runtime.async_sleep``), then 0.

        The library sleeps and hands aiobotocore a zero (rather than the delay for aiobotocore to
        sleep) so that the one injectable clock paces both kinds of client, and tests never wait.
        A cancelled task stops here at once: ``CancelledError`` is not an ``Exception``.
        """
        for remedy in deferred:
            if not await remedy():
                self._remedy_failed(request_dict)
                return None
        if delay > 0:
            try:
                await self.runtime.async_sleep(delay)
            except Exception as exc:
                report_failure("backoff sleep", exc)
                return delay  # aiobotocore sleeps the (bounded) delay itself
        return 0

    def _remedy_failed(self, request_dict: Any) -> None:
        """The async remedy could not repair the cause: the retry decided on it is taken back, as the sync
        policy would have decided had the remedy answered False at once (no retry, its charge returned)."""
        state = existing_state(request_dict.get("context") if isinstance(request_dict, dict) else None)
        if state is None:
            return
        retry = state.retry
        self.budget.give_back(retry.charged)
        state.advance(Verdict(False, reason=Reason.REMEDY_UNAVAILABLE),
                      replace(retry, held=max(0, retry.held - retry.charged), charged=0))
        telemetry.decision(self, None, state.classification, state.verdict, retry.attempts, request=request_dict)

    def _sleep(self, delay: float) -> float:
        """Sleep the backoff here (botocore gets a zero, so nothing sleeps twice); if the injected sleep
        fails, botocore sleeps the (bounded) delay itself."""
        if delay > 0:
            try:
                self.runtime.sleep(delay)
            except Exception as exc:
                report_failure("backoff sleep", exc)
                return delay
        return 0  # botocore retries on any non-None answer and sleeps it: we already slept

    def _decide(self, response: Any, attempts: int, caught_exception: BaseException | None,
                request_dict: dict[str, Any] | None, operation: Any,
                deferred: list[Callable[[], Awaitable[bool]]] | None = None) -> Any:
        context = request_dict.get("context") if isinstance(request_dict, dict) else None
        if caught_exception is not None:
            source: Any = caught_exception
            facts: Any = lambda: facts_from_exception(caught_exception)  # noqa: E731
        elif response is not None:
            http_response, source = response
            if http_response.status_code < 300 and not (isinstance(source, dict) and source.get("Error")):
                cut = facts_from_success(http_response, operation)
                if cut is None:
                    return self._succeeded(context, http_response)
                facts = lambda: cut  # noqa: E731
            else:
                facts = lambda: facts_from_parsed(http_response, source)  # noqa: E731
        else:
            return _DELEGATE
        state = call_state(context)
        classification = state.classify(source, facts)
        if classification is None:
            return self._unknown(state, attempts, caught_exception, operation)
        return self._judge(classification, state, attempts, response, caught_exception, context, operation,
                           deferred, request_dict)

    def _succeeded(self, context: Any, http_response: Any) -> None:
        """The success path: as little as possible (see bench/overhead.py)."""
        state = existing_state(context)
        if state is not None:
            telemetry.recovered(self, state, http_response=http_response, context=context)
            state.succeeded()
        if self.budget.private:
            self.budget.refund(context, http_response)
        return None

    def _unknown(self, state: CallState, attempts: int, caught_exception: BaseException | None,
                 operation: Any) -> Any:
        """An error the catalog does not know is botocore's to decide, unless it happened after the
        request was sent and resending could apply a mutating call twice."""
        retry = state.retry.at(attempts)
        if caught_exception is None or resend_is_safe(operation):
            state.advance(None, retry)
            return _DELEGATE
        verdict = Verdict(False, reason=Reason.NOT_IDEMPOTENT)
        state.advance(verdict, retry)
        telemetry.decision(self, _name(operation), None, verdict, retry.attempts, error=type(caught_exception).__name__)
        return verdict

    def _judge(self, classification: Classification, state: CallState, attempts: int, response: Any,
               caught_exception: BaseException | None, context: Any, operation: Any,
               deferred: list[Callable[[], Awaitable[bool]]] | None = None, request_dict: Any = None) -> Verdict:
        retry = state.retry.at(attempts)
        http_response, parsed = response if response is not None else (None, None)

        def charge() -> int | None:
            return self.budget.acquire(attempts, operation, context, http_response=http_response, parsed=parsed,
                                       exception=caught_exception)

        remedy = self._remedy(classification, state, deferred) \
            if classification.entry.decision is Decision.FIX_AND_RETRY else None
        verdict, retry = self.policy.decide(classification, retry, self.runtime.clock(),
                                            resend_safe=resend_is_safe(operation), remedy=remedy, budget=charge,
                                            calm=self.budget.calm, rng=self.runtime.rng)
        state.advance(verdict, retry)
        self._explain(verdict, state, parsed, operation)
        telemetry.decision(self, _name(operation), classification, verdict, retry.attempts, request=request_dict)
        return verdict

    def _explain(self, verdict: Verdict, state: CallState, parsed: Any, operation: Any) -> None:
        """What the verdict leaves behind for the application: a note for the hint, botocore's metadata."""
        if verdict.reason is Reason.NOT_IDEMPOTENT:
            state.note(f"Not resent: {_name(operation)} changes resources, has no idempotency token, and may "
                       "already have been applied; check its state first.")
        elif verdict.reason is Reason.MAX_ATTEMPTS and state.classification is not None \
                and state.attempts < self.policy.attempt_limit(state.classification.entry):
            state.note(f"Throttling gets up to {self.policy.max_attempts} attempts only while no other call of this "
                       f"client is failing; in an outage, botocore standard mode's {self.policy.transient_attempts}.")
        elif verdict.reason is Reason.RETRY_QUOTA:
            state.note("Not retried: this client's retry quota is spent (many failures in a row: an outage); "
                       "it refills as calls succeed.")
        flag = "MaxAttemptsReached" if verdict.reason in BUDGET_SPENT else \
            "RetryQuotaReached" if verdict.reason is Reason.RETRY_QUOTA else None
        if flag and isinstance(parsed, dict):
            parsed.setdefault("ResponseMetadata", {})[flag] = True

    # -- remedies ---------------------------------------------------------------------------------
    def _remedy(self, classification: Classification, state: CallState,
                deferred: list[Callable[[], Awaitable[bool]]] | None = None) -> Any:
        """The repair for a fix-and-retry entry, applied only if the policy gets that far.

        An async client's credentials refresh with a coroutine: the policy is told the repair will be
        made (when it can be), and the refresh is awaited in the coroutine that answers needs-retry.
        """
        entry = classification.entry
        if entry.remedy is Remedy.CLOCK_SKEW:
            return lambda: self._fix_clock(classification, state)
        if entry.remedy is Remedy.REFRESH_CREDENTIALS:
            credentials = getattr(self._signer, "_credentials", None)
            seen = remedies.credentials_in_use(credentials)  # before waiting: who refreshed meanwhile?
            if self.is_async and deferred is not None:
                return lambda: self._defer_refresh(credentials, seen, state, deferred)
            return lambda: self._refresh(credentials, seen, state)
        return None

    def _defer_refresh(self, credentials: Any, seen: Any, state: CallState,
                       deferred: list[Callable[[], Awaitable[bool]]]) -> bool:
        if not self.settings.refresh_credentials:
            return False
        if not remedies.can_refresh(credentials):
            state.note("These credentials cannot refresh themselves (static keys or session token).")
            return False
        deferred.append(lambda: self._refresh_async(credentials, seen, state))
        return True

    async def _refresh_async(self, credentials: Any, seen: Any, state: CallState) -> bool:
        if await remedies.refresh_credentials_async(credentials, seen=seen, clock=self.runtime.clock):
            state.note("bedrock-hooks forced a credential refresh and retried once.")
            return True
        state.note("bedrock-hooks forced a credential refresh, but the refresh failed (the credential provider "
                   "raised: see the WARNING log); fix the provider (STS, SSO, IMDS) the credentials come from.")
        return False

    def _fix_clock(self, classification: Classification, state: CallState) -> bool:
        if not self.settings.fix_clock_skew:
            return False
        skew = remedies.measure_skew(classification.facts.headers, self.runtime.wall())
        if skew is None:
            state.note("No Date header in the response: the clock skew could not be measured.")
            return False
        state.clock_skew = skew
        if not remedies.enable_clock_patch(self):
            return False
        self._watch_signing()
        self.clock_offset = skew
        state.note(f"bedrock-hooks corrected this client's signing clock by {skew:+.0f}s and retried once.")
        return True

    def _refresh(self, credentials: Any, seen: Any, state: CallState) -> bool:
        if not self.settings.refresh_credentials:
            return False
        if remedies.refresh_credentials(credentials, seen=seen, clock=self.runtime.clock):
            state.note("bedrock-hooks forced a credential refresh and retried once.")
            return True
        if remedies.can_refresh(credentials):
            state.note("bedrock-hooks forced a credential refresh, but the refresh failed (the credential provider "
                       "raised: see the WARNING log); fix the provider (STS, SSO, IMDS) the credentials come from.")
        else:
            state.note("These credentials cannot refresh themselves (static keys or session token).")
        return False

    # -- signing clock ----------------------------------------------------------------------------
    def _watch_signing(self) -> None:
        """Register the signing-clock handlers once a skew is measured: until then calls pay nothing."""
        if not self.clock_offset:
            svc = self.service
            self._registrations.add(f"before-sign.{svc}", self.on_before_sign, f"bedrock-hooks-sign-{svc}")
            self._registrations.add(f"before-send.{svc}", self.on_before_send, f"bedrock-hooks-send-{svc}")

    def on_before_sign(self, **kwargs: Any) -> None:
        try:
            if self.clock_offset:
                remedies.arm_signing_offset(self.clock_offset)
        except Exception as exc:
            report_failure("before-sign", exc)

    def on_before_send(self, **kwargs: Any) -> None:
        try:
            if self.clock_offset:
                remedies.disarm_signing_offset()
        except Exception as exc:
            report_failure("before-send", exc)

    # -- hints ------------------------------------------------------------------------------------
    def on_after_call(self, http_response: Any = None, parsed: Any = None, context: Any = None, model: Any = None,
                      **kwargs: Any) -> None:
        try:
            if http_response is None or getattr(http_response, "status_code", 200) < 300 or not isinstance(parsed, dict):
                return
            classification = classify_attempt(context, parsed, lambda: facts_from_parsed(http_response, parsed))
            if classification is None:
                return
            info = build_info(classification, self._hint_facts(context))
            telemetry.final_failure(self, model, info, context=context, http_response=http_response)
            if not self.settings.hints:
                return
            error = parsed.get("Error") or {}
            message = append_hint(str(error.get("Message") or ""), hint_line(info))  # all or nothing:
            parsed["BedrockHooks"] = info  # the response is changed only once nothing can fail any more
            parsed.setdefault("Error", error)["Message"] = message
        except Exception as exc:
            report_failure("after-call", exc)

    def on_after_call_error(self, exception: BaseException | None = None, context: Any = None, **kwargs: Any) -> None:
        try:
            if exception is None or getattr(exception, "bedrock_hooks", None) is not None:
                return
            classification = classify_attempt(context, exception, lambda: facts_from_exception(exception))
            if classification is None:
                return
            info = build_info(classification, self._hint_facts(context))
            telemetry.final_failure(self, str(kwargs.get("event_name", "")).rsplit(".", 1)[-1], info, context=context)
            if self.settings.hints:
                annotate_exception(exception, info)
        except Exception as exc:
            report_failure("after-call-error", exc)

    def _hint_facts(self, context: Any) -> HintFacts:
        state = existing_state(context)
        retries = context.get("retries") if isinstance(context, dict) else None
        attempts = (state.attempts if state and state.attempts else None) or (retries or {}).get("attempt")
        facts = HintFacts(attempts=attempts)
        if state is not None:
            facts.reason = state.verdict.reason.value if state.verdict else None
            facts.clock_skew = state.clock_skew
            facts.notes = list(state.notes)
            facts.route = list(state.route)
        credentials = getattr(self._signer, "_credentials", None)
        facts.credential_source = remedies.credential_source(credentials)
        facts.botocore_version = _botocore_version()
        if not self.settings.retry:
            facts.notes.append(RETRY_OFF_NOTE)  # the entry's solution may say what the library would have done
        return facts


def feature(client: Any, settings: Settings, runtime: Runtime) -> ClientHooks:
    """The registry's factory for the retry feature (attached to every covered client)."""
    return ClientHooks(client, settings, runtime)


def _name(operation: Any) -> str:
    return str(getattr(operation, "name", None) or "this operation")


def _cut_answer(response: Any, operation: Any) -> BaseException | None:
    """botocore's error for ``response`` if it is a 2xx cut short (:func:`facts_from_success`), else None."""
    if response is None:
        return None
    http_response, parsed = response
    if http_response.status_code >= 300 or (isinstance(parsed, dict) and parsed.get("Error")):
        return None
    facts = facts_from_success(http_response, operation)
    return facts.exception if facts is not None else None


def _cut_short(response: Any, request_dict: Any) -> BaseException | None:
    """The exception to raise instead of returning a truncated 2xx whose retries are spent."""
    if response is None or response[0].status_code >= 300:
        return None
    state = existing_state(request_dict.get("context") if isinstance(request_dict, dict) else None)
    classification = state.classification if state is not None else None
    return classification.facts.exception if classification is not None else None


def _botocore_version() -> str | None:
    try:
        import botocore

        return botocore.__version__
    except Exception:
        return None
