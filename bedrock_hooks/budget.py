"""The retry budget: every retry the library decides is paid from the client's retry quota.

Without it, decisions taken from the catalog bypass botocore's quota, and in an outage every call
makes its full number of attempts: a retry storm (40 calls against a failing endpoint sent 240
requests where plain botocore's standard mode sent 140). So each retry is charged exactly as botocore
charges its own, through botocore's own objects:

* standard and adaptive mode: the client's own ``RetryQuotaChecker`` (the one botocore's retry
  handler uses). Its costs are botocore's (botocore 1.43.11: retry 5, timeout 10, throttling 5;
  1.44.8: retry 14, throttling 5), it records the charge in the call's context, and botocore's own
  ``after-call`` handler refunds it on success (1 for a call that needed no retry). Library and botocore draw from
  one quota, so together they never send more than plain standard mode would;
* legacy mode (no quota in botocore): a private ``RetryQuotaChecker`` of the same class and capacity,
  refunded by the retry feature when an attempt succeeds.

One budget per client, shared by its unary calls and its streams.
"""

from __future__ import annotations

import weakref
from typing import Any

from . import aio, compat, process
from .retry_slot import botocore_retry_handler

_lock = process.lock()
_budgets: weakref.WeakKeyDictionary[Any, RetryBudget] = weakref.WeakKeyDictionary()


class RetryBudget:
    """One client's retry quota, as botocore's ``RetryQuotaChecker`` keeps it (None: not metered)."""

    def __init__(self, checker: Any, *, private: bool) -> None:
        self.checker = checker
        self.private = private  #: True: legacy mode, refunded by the library (botocore refunds its own)

    @property
    def available(self) -> int | None:
        return None if self.checker is None else int(self.checker._quota.available_capacity)

    def acquire(self, attempt: int, operation_model: Any, request_context: Any, *, http_response: Any = None,
                parsed: Any = None, exception: BaseException | None = None) -> int | None:
        """Take the cost of one retry and return it; None when the quota cannot pay (no retry then).

        botocore's checker prices the retry from the same facts its own handler sees (throttling,
        timeout or other) and notes the charge in the call's context for the refund.
        """
        if self.checker is None:
            return 0
        from botocore.retries.standard import RetryContext

        if not isinstance(request_context, dict):
            request_context = {}
        context = RetryContext(attempt_number=attempt, operation_model=operation_model, parsed_response=parsed,
                               http_response=http_response, caught_exception=exception,
                               request_context=request_context)
        if not self.checker.acquire_retry_quota(context):
            return None
        return int(request_context.get("retry_quota_capacity") or 0)

    def refund(self, request_context: Any, http_response: Any) -> None:
        """A private quota gets back what botocore's ``after-call`` gives back to its own one."""
        if self.private and isinstance(request_context, dict):
            self.checker.release_retry_quota(request_context, http_response)

    def calm(self, held: int) -> bool:
        """Whether no call but the asking one (which holds ``held``) holds any of the quota: no outage is
        draining it. An unmetered client (or a quota without a known size) is always calm, as before."""
        if self.checker is None:
            return True
        quota = self.checker._quota
        maximum = getattr(quota, "_max_capacity", None)
        return not isinstance(maximum, int) or int(quota.available_capacity) + held >= maximum

    def give_back(self, amount: int) -> None:
        """Return ``amount`` (a re-issued stream that succeeded: its new call's refund covers only itself)."""
        if amount > 0 and self.checker is not None:
            self.checker._quota.release(amount)


def budget_for(client: Any) -> RetryBudget:
    """The retry budget of ``client``: botocore's quota when its retry mode has one, else a private one.

    Made once per client, when its first feature attaches (the retry slot still holds botocore's
    handler then), and shared by its unary calls and streams. Where the internals are missing
    (:mod:`.compat`), retries are not metered, as before this budget existed.
    """
    with _lock:
        budget = _budgets.get(client)
        if budget is None:
            if not compat.available(compat.RETRY_QUOTA) or (aio.is_async(client)
                                                            and not compat.available(compat.AIO_RETRY_QUOTA)):
                budget = RetryBudget(None, private=False)
            else:
                checker = _botocore_checker(client)
                budget = RetryBudget(checker or _new_checker(), private=checker is None)
            _budgets[client] = budget
        return budget


def _new_checker() -> Any:
    return compat.new_retry_quota_checker()  # its signature changed after botocore 1.40.61


def _botocore_checker(client: Any) -> Any:
    """The ``RetryQuotaChecker`` of botocore's retry handler in the client's retry slot (standard and
    adaptive mode; legacy mode has none), looking through the retry feature if it holds the slot."""
    from botocore.retries.standard import RetryQuotaChecker

    handler = botocore_retry_handler(client.meta.events, client.meta.service_model.service_id.hyphenize())
    for _ in range(3):
        owner = getattr(handler, "__self__", None)
        checker = getattr(owner, "_retry_quota", None)
        if isinstance(checker, RetryQuotaChecker):
            return checker
        handler = getattr(owner, "_botocore_retry", None)  # the retry feature keeps botocore's handler
    return None
