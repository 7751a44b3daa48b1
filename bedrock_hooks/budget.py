"""The retry budget: every retry the library decides is paid from the client's retry quota.

Without it, decisions taken from the catalog bypass botocore's quota, and in an outage every call
makes its full number of attempts: a retry storm (40 calls against a failing endpoint sent 240
requests where plain botocore's standard mode sent 140). So each retry is charged exactly as botocore
charges its own, through botocore's own objects:

* standard and adaptive mode: the client's own ``RetryQuotaChecker`` (the one botocore's retry
  handler uses). Its costs are botocore's (retry 5, timeout 10 in botocore 1.4x up to 1.43; retry 14,
  throttling 5 later), it records the charge in the call's context, and botocore's own ``after-call``
  handler refunds it on success (1 for a call that needed no retry). Library and botocore draw from
  one quota, so together they never send more than plain standard mode would;
* legacy mode (no quota in botocore): a private ``RetryQuotaChecker`` of the same class and capacity,
  refunded by the retry feature when an attempt succeeds.

One budget per client, shared by its unary calls and its streams.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from botocore.retries import quota as _quota
from botocore.retries import standard as _standard

_lock = threading.Lock()
_budgets: weakref.WeakKeyDictionary[Any, RetryBudget] = weakref.WeakKeyDictionary()


class RetryBudget:
    """One client's retry quota, as botocore's ``RetryQuotaChecker`` keeps it."""

    def __init__(self, checker: Any, *, private: bool) -> None:
        self.checker = checker
        self.private = private  #: True: legacy mode, refunded by the library (botocore refunds its own)

    @property
    def available(self) -> int:
        return int(self.checker._quota.available_capacity)

    def acquire(self, attempt: int, operation_model: Any, request_context: Any, *, http_response: Any = None,
                parsed: Any = None, exception: BaseException | None = None) -> int | None:
        """Take the cost of one retry and return it; None when the quota cannot pay (no retry then).

        botocore's checker prices the retry from the same facts its own handler sees (throttling,
        timeout or other) and notes the charge in the call's context for the refund.
        """
        if not isinstance(request_context, dict):
            request_context = {}
        context = _standard.RetryContext(attempt_number=attempt, operation_model=operation_model,
                                         parsed_response=parsed, http_response=http_response,
                                         caught_exception=exception, request_context=request_context)
        if not self.checker.acquire_retry_quota(context):
            return None
        return int(request_context.get("retry_quota_capacity") or 0)

    def refund(self, request_context: Any, http_response: Any) -> None:
        """A private quota gets back what botocore's ``after-call`` gives back to its own one."""
        if self.private and isinstance(request_context, dict):
            self.checker.release_retry_quota(request_context, http_response)

    def give_back(self, amount: int) -> None:
        """Return ``amount`` (a re-issued stream that succeeded: its new call's refund covers only itself)."""
        if amount > 0:
            self.checker._quota.release(amount)


def budget_for(client: Any) -> RetryBudget:
    """The retry budget of ``client``: botocore's quota when its retry mode has one, else a private one."""
    with _lock:
        budget = _budgets.get(client)
        if budget is None:
            checker = _botocore_checker(client)
            budget = RetryBudget(checker or _new_checker(), private=checker is None)
            _budgets[client] = budget
        return budget


def _new_checker() -> Any:
    detector = _standard.ThrottlingErrorDetector(_standard.RetryEventAdapter())
    return _standard.RetryQuotaChecker(_quota.RetryQuota(), detector)


def _botocore_checker(client: Any) -> Any:
    """The ``RetryQuotaChecker`` botocore registered on this client's ``after-call`` to refund its quota.

    Found through the refund handler rather than the retry slot, which the retry feature takes over.
    """
    events = client.meta.events
    while hasattr(events, "_emitter"):
        events = events._emitter
    service = client.meta.service_model.service_id.hyphenize()
    for handler in events._handlers.prefix_search(f"after-call.{service}"):
        owner = getattr(handler, "__self__", None)
        if isinstance(owner, _standard.RetryQuotaChecker):
            return owner
    return None
