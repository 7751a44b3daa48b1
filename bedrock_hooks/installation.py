"""Installation: put the hooks on every session of the process, on one session, or on one client.

Frameworks (langchain-aws, strands-agents, pydantic-ai...) build their own ``boto3.Session``, so
``install()`` with no argument covers *every* botocore session, present and future. botocore
registers a client's retry handler after the client object exists and emits no event afterwards,
so "every client a session creates" needs one hook point, ``Session.create_client``
(:data:`patches.CREATE_CLIENT`, held by each session or global installation). Everything else is
plain event registration on each Bedrock client's own emitter, which is why a non-Bedrock client of
the same session behaves exactly as plain botocore.

Targets are held weakly: a session or client the application drops is garbage-collected, and its
installation with it, even without ``uninstall()``.

Async targets (aiobotocore sessions and clients, aioboto3 sessions) are installed on the same way:
aiobotocore builds its clients in ``AioClientCreator.create_client`` (:data:`patches.AIO_CREATE_CLIENT`,
held alongside :data:`patches.CREATE_CLIENT`, applied once aiobotocore is imported), and each feature
returns awaitables instead of blocking on an async client (:attr:`ClientFeature.is_async`). Both kinds
of client get their handlers from the same feature classes, settings and catalog.
"""

from __future__ import annotations

import enum
import logging
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

from . import aio, compat, patches, process
from .config import Settings, apply_log_level, load_settings
from .failsafe import safe_invoke
from .features import REGISTRY, Feature, Runtime

logger = logging.getLogger("bedrock_hooks")



class Kind(str, enum.Enum):
    """What an :class:`Installation` covers (a ``str`` enum: ``kind == "session"`` holds)."""

    GLOBAL = "global"  #: every botocore session of the process: ``install()``
    SESSION = "session"  #: clients one session creates from now on: ``install(session)``
    CLIENT = "client"  #: one existing client: ``install(client)``
    DISABLED = "disabled"  #: ``BEDROCK_HOOKS_ENABLED`` is off: nothing installed


class Attached(NamedTuple):
    """A client carrying hooks: the installation it belongs to and the features attached to it."""

    installation: Installation
    features: list[Feature]


# ``consistent``: a fork waits (bounded) for another thread's install/uninstall to finish, so a
# child never inherits a half-attached client; the lock is fresh in the child either way.
_lock = process.rlock(consistent=True)
_sessions: weakref.WeakKeyDictionary[Any, Installation] = weakref.WeakKeyDictionary()
_clients: weakref.WeakKeyDictionary[Any, Attached] = weakref.WeakKeyDictionary()
_global: Installation | None = None
_once: set[str] = set()


class Installation:
    """The handle :func:`install` returns; :meth:`uninstall` restores plain botocore."""

    def __init__(self, target: Any, settings: Settings, runtime: Runtime, *, kind: Kind,
                 reason: str | None = None) -> None:
        self._target = _weak(target)
        self.settings = settings
        self.runtime = runtime
        self.kind = Kind(kind)
        self.active = self.kind in (Kind.GLOBAL, Kind.SESSION, Kind.CLIENT)
        #: Why nothing was installed (``disabled``), for logs and ``doctor``.
        self.reason = reason
        self._clients: weakref.WeakSet[Any] = weakref.WeakSet()

    def __repr__(self) -> str:
        return (f"<bedrock_hooks.Installation {self.kind.value} active={self.active} "
                f"services={','.join(self.settings.services)}>")

    @property
    def target(self) -> Any:
        """The session or client installed on (None for global, or once the application dropped it)."""
        return self._target()

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
            for spec in REGISTRY:
                feature = safe_invoke("attach", lambda: spec.load()(client, settings, self.runtime))
                if feature is None:
                    continue
                if safe_invoke("attach", feature.attach, fallback=False) is False:
                    safe_invoke("detach", feature.detach)
                    continue
                features.append(feature)
            _clients[client] = Attached(self, features)
            self._clients.add(client)
            return True

    def detach(self, client: Any) -> None:
        with _lock:
            owner = _clients.get(client)
            if owner is None or owner.installation is not self:
                return
            del _clients[client]
            self._clients.discard(client)
            for feature in reversed(owner.features):
                safe_invoke("detach", feature.detach)

    def uninstall(self) -> None:
        """Detach from every client, forget the target and give up process-wide patches; idempotent."""
        global _global
        with _lock:
            if not self.active:
                return
            self.active = False
            for client in list(self._clients):
                self.detach(client)
            target = self.target
            if self.kind is Kind.SESSION and target is not None and _sessions.get(target) is self:
                del _sessions[target]
            if _global is self:
                _global = None
            _release_create_client(self)
            if not _sessions and _global is None and not _clients:
                for spec in REGISTRY:  # the last installation: no learned state outlives it
                    safe_invoke("reset", spec.reset_state)


def _weak(target: Any) -> Callable[[], Any]:
    if target is None:
        return lambda: None
    try:
        return weakref.ref(target)
    except TypeError:  # not weakrefable: held, as before
        return lambda: target


def _service_name(client: Any) -> str | None:
    try:
        return client.meta.service_model.service_name
    except Exception:
        return None


def _is_client(obj: Any) -> bool:
    return hasattr(obj, "meta") and hasattr(getattr(obj, "meta", None), "events") and hasattr(obj, "_endpoint")


def _botocore_session(target: Any) -> Any:
    """The botocore Session behind ``target`` (a boto3.Session keeps it in ``_session``)."""
    return getattr(target, "_session", target)


# -- async targets -------------------------------------------------------------------------------

def _acquire_create_client(installation: Installation) -> None:
    """Hold both client-creation patches: botocore's now, aiobotocore's once aiobotocore is imported."""
    patches.CREATE_CLIENT.acquire(installation)
    if patches.AIO_CREATE_CLIENT.loaded:
        _acquire_aio_create_client(installation)
    else:
        _watch_async_sessions()


def _acquire_aio_create_client(installation: Installation) -> None:
    """Once aiobotocore is imported: its client creator is patched (the patch checks it is still a coroutine).

    No compat probe here: this runs inside aiobotocore's own import (the launcher's order), where probing
    other aiobotocore modules would import them out of their order."""
    safe_invoke("create-client", patches.AIO_CREATE_CLIENT.acquire, installation)


def _release_create_client(installation: Installation) -> None:
    patches.CREATE_CLIENT.release(installation)
    patches.AIO_CREATE_CLIENT.release(installation)


def _holders() -> list[Installation]:
    return [i for i in (_global, *_sessions.values()) if i is not None and i.active]


def _aiobotocore_imported(*_: Any) -> None:
    """aiobotocore was imported after installing (the launcher installs first): patch its sessions now."""
    with _lock:
        for installation in _holders():
            _acquire_aio_create_client(installation)


def _watch_async_sessions() -> None:
    if "watch-aio" not in _once:  # once per process: wrapt cannot unregister a hook
        _once.add("watch-aio")
        try:
            import wrapt

            wrapt.register_post_import_hook(_aiobotocore_imported, "aiobotocore.client")
        except Exception as exc:
            logger.warning("bedrock-hooks: cannot watch for aiobotocore imports (%s); install() after importing "
                           "aiobotocore to cover its sessions", type(exc).__name__)


# -- install / uninstall ----------------------------------------------------------------------------

def _configure(runtime: Runtime | None, overrides: dict[str, Any]) -> tuple[Settings, Runtime]:
    """Settings (overrides > environment > defaults, never raising) and the runtime, for every entry point."""
    settings = load_settings(**overrides)
    apply_log_level(settings)
    return settings, runtime or Runtime()


def install(target: Any = None, *, runtime: Runtime | None = None, **overrides: Any) -> Installation:
    """Install bedrock-hooks; calling it again returns the same installation.

    ``target``: None (the default) for *every* botocore session of the process, present and future
    -- the clients frameworks create included; a ``boto3.Session`` or ``botocore.session.Session``
    for the clients that session creates from now on; an existing client for that client alone.
    ``overrides`` are option names from :mod:`bedrock_hooks.config` (``max_attempts=3``...), which
    win over ``BEDROCK_HOOKS_*`` variables. Never raises for bad configuration: a warning names the
    option and the value used instead. aiobotocore sessions and clients and aioboto3 sessions are
    targets like the others (their clients get handlers that never block the event loop).
    """
    if target is None:
        return install_global(runtime=runtime, **overrides)
    settings, runtime = _configure(runtime, overrides)
    if not settings.enabled:
        return Installation(target, settings, runtime, kind=Kind.DISABLED, reason="BEDROCK_HOOKS_ENABLED is off")
    with _lock:
        if _is_client(target):
            return _install_client(target, settings, runtime)
        session = _botocore_session(target)
        existing = _sessions.get(session)
        if existing is not None:
            return existing
        installation = Installation(session, settings, runtime, kind=Kind.SESSION)
        _acquire_create_client(installation)
        _sessions[session] = installation
        return installation


def _install_client(client: Any, settings: Settings, runtime: Runtime) -> Installation:
    owner = _clients.get(client)
    if owner is not None:
        return owner.installation
    installation = Installation(client, settings, runtime, kind=Kind.CLIENT)
    installation.attach(client)
    return installation


def install_global(*, runtime: Runtime | None = None, **overrides: Any) -> Installation:
    """``install()``: every botocore session of the process, present and future (the zero-code mode)."""
    global _global
    settings, runtime = _configure(runtime, overrides)
    if not settings.enabled:
        return Installation(None, settings, runtime, kind=Kind.DISABLED, reason="BEDROCK_HOOKS_ENABLED is off")
    with _lock:
        if _global is None:
            _global = Installation(None, settings, runtime, kind=Kind.GLOBAL)
            _acquire_create_client(_global)
        return _global


def uninstall(target: Any = None) -> None:
    """Undo :func:`install` for ``target`` (same meaning as for install); ``"*"`` undoes everything."""
    with _lock:
        if isinstance(target, str) and target == "*":
            for installation in {*_sessions.values(), *(o.installation for o in _clients.values()), _global} - {None}:
                installation.uninstall()
        elif target is None:
            if _global is not None:
                _global.uninstall()
        elif _is_client(target):
            owner = _clients.get(target)
            if owner is None:
                return
            if owner.installation.kind is Kind.CLIENT:
                owner.installation.uninstall()
            else:
                owner.installation.detach(target)
        else:
            installation = _sessions.get(_botocore_session(target))
            if installation is not None:
                installation.uninstall()


def installation_for(target: Any = None) -> Installation | None:
    """The installation that covers ``target`` (a client or session; None: the global one), if any."""
    with _lock:
        if target is None:
            return _global
        if _is_client(target):
            owner = _clients.get(target)
            return owner.installation if owner else None
        return _sessions.get(_botocore_session(target)) or _global


def attached_features(client: Any) -> list[Feature]:
    """The features attached to ``client`` (empty when it carries no hooks): tests and ``doctor``."""
    owner = _clients.get(client)
    return list(owner.features) if owner else []


# -- the one hook point: Session.create_client --------------------------------------------------

def _after_create_client(session: Any, client: Any) -> None:
    installation = (_sessions.get(session) if session is not None else None) or _global
    if installation is not None and installation.active:
        installation.attach(client)


def _on_client_created(client: Any, session: Any, *args: Any, **kwargs: Any) -> Any:
    """The :data:`patches.CREATE_CLIENT` hook: a new client of a covered session gets the hooks."""
    _after_create_client(session, client)
    return client


patches.CREATE_CLIENT.set_hook(_on_client_created)


def _on_aio_client_created(client: Any, creator: Any, *args: Any, **kwargs: Any) -> Any:
    """The :data:`patches.AIO_CREATE_CLIENT` hook: aiobotocore's client creator is made by a session, with
    that session's event emitter; the session is the installed one whose emitter it is."""
    session = None
    if _sessions and compat.available(compat.AIO_SESSIONS):  # else the global installation alone
        emitter = getattr(creator, "_event_emitter", None)
        session = next((s for s in list(_sessions) if aio.is_async(s) and _emitter_of(s) is emitter), None)
    _after_create_client(session, client)
    return client


def _emitter_of(session: Any) -> Any:
    try:
        return session.get_component("event_emitter")
    except Exception:
        return None


patches.AIO_CREATE_CLIENT.set_hook(_on_aio_client_created)


def is_patched() -> bool:
    """Whether ``Session.create_client`` currently carries the hook (for tests and doctor)."""
    return patches.CREATE_CLIENT.engaged
