"""Where a Bedrock quota applies: the key of every piece of process-wide state.

Bedrock's quotas (requests and tokens per minute) are per account, Region and model or inference
profile. State the library shares between clients — rate-limiter buckets, circuit breakers,
remembered inference profiles — is therefore keyed by a :class:`QuotaScope`: one account's throttling
never paces or reroutes another account, one throttled model never slows another. The endpoint is
part of the key too (a proxy or a PrivateLink endpoint may front another quota than the public one).

The account is a salted hash of the credentials' account ID (or access key ID when botocore does not
know the account), never the value itself, so it can appear in a key without being a secret or
identifying anything outside this process. It is resolved once per credentials object: refreshable
credentials rotate their keys, and reading them must neither trigger a refresh nor cost a lookup.
"""

from __future__ import annotations

import hashlib
import os
import re
import weakref
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from . import compat, process

_SALT = os.urandom(16)  #: per process: a hash seen in a dump says nothing about the key outside it
#: The library's fixed key for fleet identities: every process of a fleet must name an account alike
#: (see :func:`fleet_identity` and SECURITY.md, "Shared state on Redis").
_FLEET_KEY = b"bedrock-hooks/fleet-identity/v1"
_MAX_FLEET = 4096  #: identities remembered for fleet keys (credentials rotate; the oldest give way)
_MODEL_IN_PATH = re.compile(r"^(/model/)([^/]+)(/.*)$")
_SIGNING_REGION = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/")
_accounts: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_accounts_lock = process.lock()
#: per-process account hash -> fleet identity (a keyed hash too, never the account ID or key itself)
_fleet: dict[str, str] = {}


class QuotaScope(NamedTuple):
    """One quota: ``account`` (hash), ``region``, ``target`` (``model:<id>`` or ``operation:<name>``), endpoint."""

    account: str
    region: str
    target: str
    endpoint: str


def model_in_path(url_path: str) -> str | None:
    """The ``{modelId}`` of ``/model/{modelId}/...`` (percent-decoded), or None."""
    match = _MODEL_IN_PATH.match(url_path or "")
    return unquote(match.group(2)) if match else None


def target_of(url_path: str, operation: str) -> str:
    """The model a request draws on, or its operation when it names no model (ApplyGuardrail...)."""
    model = model_in_path(url_path)
    return f"model:{model}" if model is not None else f"operation:{operation}"


def endpoint_of(url: str) -> str:
    """``scheme://host[:port]`` of a request URL, lower case."""
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}".lower()


def request_scope(request: Any, operation: str, default_region: str, signer: Any) -> QuotaScope:
    """The scope of a prepared request (``before-send``): its URL, and the Region its signature names."""
    parts = urlsplit(getattr(request, "url", None) or "")
    return QuotaScope(account_of(signer), signing_region(getattr(request, "headers", None), default_region),
                      target_of(parts.path, operation), f"{parts.scheme}://{parts.netloc}".lower())


def signing_region(headers: Any, default: str) -> str:
    """The Region a request was signed for (its SigV4 credential scope), else ``default``."""
    value = headers.get("Authorization") if headers is not None else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    match = _SIGNING_REGION.search(value) if isinstance(value, str) else None
    return match.group(1) if match else default


def account_of(signer: Any) -> str:
    """The hashed identity a client signs with: credentials, plus the bearer token when there is one."""
    if not compat.available(compat.QUOTA_SCOPE):  # accounts cannot be told apart: share nothing between clients
        return f"signer-{id(signer):x}"
    account = _credentials_account(getattr(signer, "_credentials", None))
    auth_token = getattr(signer, "_auth_token", None)
    if auth_token is None:
        return account
    token = getattr(auth_token, "token", None)  # FrozenAuthToken; a token provider is told apart by identity
    return f"{account}+{_digest('token:' + token) if isinstance(token, str) else f'provider-{id(auth_token):x}'}"


def _credentials_account(credentials: Any) -> str:
    if credentials is None:
        return "unsigned"
    try:
        cached = _accounts.get(credentials)
    except TypeError:  # not weak-referenceable: resolve every time (still no refresh)
        return _resolve(credentials) or f"unresolved-{id(credentials):x}"
    if cached is not None:
        return cached
    resolved = _resolve(credentials)
    if resolved is None:  # not fetched yet (deferred credentials): do not cache a placeholder
        return f"unresolved-{id(credentials):x}"
    with _accounts_lock:
        _accounts[credentials] = resolved
    return resolved


def _resolve(credentials: Any) -> str | None:
    """Read the account ID or access key ID without triggering a refresh (botocore's own fields)."""
    fields = getattr(credentials, "__dict__", {})
    account = fields.get("_account_id", fields.get("account_id"))
    if account:
        return _digest(f"account:{account}")
    access_key = fields.get("_access_key", fields.get("access_key"))
    return _digest(f"key:{access_key}") if access_key else None


def _digest(identity: str) -> str:
    data = identity.encode("utf-8", "replace")
    local = hashlib.blake2b(data, key=_SALT, digest_size=8).hexdigest()
    if local not in _fleet:
        with _accounts_lock:
            while len(_fleet) >= _MAX_FLEET:
                del _fleet[next(iter(_fleet))]
            _fleet[local] = hashlib.blake2b(data, key=_FLEET_KEY, digest_size=16).hexdigest()
    return local


def fleet_identity(account: str) -> str | None:
    """The name every process of a fleet gives the account behind ``account`` (a :attr:`QuotaScope.account`).

    A per-process hash cannot key shared state (each process has its own salt), so the identity
    hashed for it is also hashed with the library's fixed key; a shared store hashes that again with
    its own salt (``BEDROCK_HOOKS_STATE_SALT``). None for an identity only this process can name
    (``signer-...``, ``unresolved-...``, a token provider): its state stays in the process.
    """
    if account == "unsigned":
        return account
    parts = account.split("+")
    named = [_fleet.get(part) for part in parts]
    return None if any(name is None for name in named) else "+".join(named)  # type: ignore[arg-type]
