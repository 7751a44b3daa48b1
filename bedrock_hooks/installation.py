"""Installation: put the hooks on a session (every Bedrock client it creates) or on one client.

botocore registers a client's retry handler *after* the client object exists and emits no event
afterwards, so "every client this session creates" needs one hook point: ``Session.create_client``
is wrapped (wrapt, once per process, removed again when the last installation is uninstalled).
Everything else is plain event registration on each Bedrock client's own emitter, which is why a
non-Bedrock client of the same session behaves exactly as plain botocore.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from . import compat, fallbacks, keepalive, ratelimit, streaming
from .config import Settings, apply_log_level, load_settings
from .failsafe import report_failure, safe_invoke
from .features import Feature, FeatureFactory, Runtime
from .retry import ClientHooks

logger = logging.getLogger("bedrock_hooks")


FEATURES: list[FeatureFactory] = [lambda client, settings, runtime: ClientHooks(client, settings, runtime)]
FEATURES.append(keepalive.feature)  # keep-alive socket options + idle eviction (issue 3)
FEATURES.append(streaming.feature)  # mid-stream errors: hints and transparent re-issue
FEATURES.append(fallbacks.feature)  # alternative models, inference profiles, Regions, circuit breaking
FEATURES.append(ratelimit.feature)  # process-wide adaptive pacing when throttled (issue 7)

_lock = threading.RLock()
_sessions: weakref.WeakKeyDictionary[Any, Installation] = weakref.WeakKeyDictionary()
_clients: weakref.WeakKeyDictionary[Any, tuple[Installation, list[Feature]]] = weakref.WeakKeyDictionary()
_global: Installation | None = None
_original_create_client: Any = None


class Installation:
    """The handle :func:`install` returns; :meth:`uninstall` restores plain botocore."""

    def __init__(self, target: Any, settings: Settings, runtime: Runtime, *, kind: str) -> None:
        self.target = target
        self.settings = settings
        self.runtime = runtime
        self.kind = kind  #: "session", "client", "global" or "disabled"
        self.active = kind != "disabled"
        self._clients: weakref.WeakSet[Any] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"<bedrock_hooks.Installation {self.kind} active={self.active} services={','.join(self.settings.services)}>"

    @property
    def clients(self) -> list[Any]:
        """The clients currently carrying this installation's hooks."""
        return list(self._clients)

    def covers(self, client: Any) -> bool:
        return _service_name(client) in self.settings.services

    def attach(self, client: Any) -> bool:
        """Attach the hooks to ``client`` unless it already carries hooks (from any installation)."""
        with _lock:
            if not self.active or client in _clients or not self.covers(client):
                return False
            features: list[Feature] = []
            settings = safe_invoke("compat", compat.restrict, self.settings, fallback=self.settings)
            for factory in FEATURES:
                feature = safe_invoke("attach", factory, client, settings, self.runtime)
                if feature is None:
                    continue
                if safe_invoke("attach", feature.attach, fallback=False) is False:
                    safe_invoke("detach", feature.detach)
                    continue
                features.append(feature)
            _clients[client] = (self, features)
            self._clients.add(client)
            return True

    def detach(self, client: Any) -> None:
        with _lock:
            owner = _clients.get(client)
            if owner is None or owner[0] is not self:
                return
            del _clients[client]
            self._clients.discard(client)
            for feature in reversed(owner[1]):
                safe_invoke("detach", feature.detach)

    def uninstall(self) -> None:
        """Detach from every client and forget the target; idempotent."""
        global _global
        with _lock:
            if not self.active:
                return
            self.active = False
            for client in list(self._clients):
                self.detach(client)
            if self.kind == "session":
                _sessions.pop(self.target, None)
            if _global is self:
                _global = None
            if not _sessions and _global is None and not _clients:
                _unpatch()


def _service_name(client: Any) -> str | None:
    try:
        return client.meta.service_model.service_name
    except Exception:
        return None


def _is_client(obj: Any) -> bool:
    return hasattr(obj, "meta") and hasattr(getattr(obj, "meta", None), "events") and hasattr(obj, "_endpoint")


def _botocore_session(target: Any) -> Any:
    """A botocore Session for ``target`` (None: boto3's default session, created if needed)."""
    if target is None:
        import boto3

        target = boto3._get_default_session()
    return getattr(target, "_session", target)  # boto3.Session keeps the botocore one here


def _configure(runtime: Runtime | None, overrides: dict[str, Any]) -> tuple[Settings, Runtime]:
    """Settings (overrides > environment > defaults, never raising) and the runtime, for both entry points."""
    settings = load_settings(**overrides)
    apply_log_level(settings)
    return settings, runtime or Runtime()


def install(target: Any = None, *, runtime: Runtime | None = None, **overrides: Any) -> Installation:
    """Install bedrock-hooks on a session or client; calling it again returns the same installation.

    ``target``: a ``boto3.Session``, a ``botocore.session.Session``, an existing client, or None for
    boto3's default session. ``overrides`` are option names from :mod:`bedrock_hooks.config`
    (``max_attempts=3``...), which win over ``BEDROCK_HOOKS_*`` variables. Never raises for bad
    configuration: a warning names the option and the value used instead.
    """
    settings, runtime = _configure(runtime, overrides)
    if not settings.enabled:
        return Installation(target, settings, runtime, kind="disabled")
    with _lock:
        if _is_client(target):
            owner = _clients.get(target)
            if owner is not None:
                return owner[0]
            installation = Installation(target, settings, runtime, kind="client")
            installation.attach(target)
            return installation
        session = _botocore_session(target)
        existing = _sessions.get(session)
        if existing is not None:
            return existing
        _patch()
        installation = Installation(session, settings, runtime, kind="session")
        _sessions[session] = installation
        return installation


def install_global(*, runtime: Runtime | None = None, **overrides: Any) -> Installation:
    """Install on every botocore session of the process, present and future (the zero-code mode)."""
    global _global
    settings, runtime = _configure(runtime, overrides)
    if not settings.enabled:
        return Installation(None, settings, runtime, kind="disabled")
    with _lock:
        if _global is None:
            _patch()
            _global = Installation(None, settings, runtime, kind="global")
        return _global


def uninstall(target: Any = None) -> None:
    """Undo :func:`install` for ``target`` (same meaning as for install); ``"*"`` undoes everything."""
    with _lock:
        if target == "*":
            for installation in {*_sessions.values(), *(o[0] for o in _clients.values()), _global} - {None}:
                installation.uninstall()
            return
        if _is_client(target):
            owner = _clients.get(target)
            if owner is not None:
                if owner[0].kind == "client":
                    owner[0].uninstall()
                else:
                    owner[0].detach(target)
            return
        installation = _sessions.get(_botocore_session(target))
        if installation is not None:
            installation.uninstall()


def installation_for(target: Any) -> Installation | None:
    """The installation that covers ``target`` (a client or session), if any."""
    with _lock:
        if _is_client(target):
            owner = _clients.get(target)
            return owner[0] if owner else None
        return _sessions.get(_botocore_session(target)) or _global


# -- the one hook point: Session.create_client --------------------------------------------------

def _after_create_client(session: Any, client: Any) -> None:
    installation = _sessions.get(session) or _global
    if installation is not None and installation.active:
        installation.attach(client)


def _create_client_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    client = wrapped(*args, **kwargs)
    try:
        _after_create_client(instance, client)
    except Exception as exc:  # the client is returned as plain botocore made it
        report_failure("create-client", exc)
    return client


def _patch() -> None:
    global _original_create_client
    if _original_create_client is not None:
        return
    import botocore.session
    import wrapt

    original = botocore.session.Session.__dict__.get("create_client")
    if original is None:
        logger.warning("bedrock-hooks: botocore.session.Session.create_client not found; "
                       "only clients passed to install(client) are covered")
        return
    _original_create_client = original
    wrapt.wrap_function_wrapper(botocore.session.Session, "create_client", _create_client_wrapper)


def _unpatch() -> None:
    """Called when the last installation is gone: remove the hook point and process-wide state."""
    global _original_create_client
    fallbacks.reset_routers()
    ratelimit.reset()
    if _original_create_client is None:
        return
    import botocore.session

    botocore.session.Session.create_client = _original_create_client
    _original_create_client = None
    from . import remedies

    remedies.disable_clock_patch()


def is_patched() -> bool:
    """Whether ``Session.create_client`` currently carries the hook (for tests and doctor)."""
    return _original_create_client is not None
