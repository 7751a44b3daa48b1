"""Every process-wide patch of the package, and the discipline that makes each one safe to undo.

Everything else the library does is registered on one Bedrock client's own event emitter. Two
botocore functions have no event to hook and are replaced for the whole process:

* :data:`CREATE_CLIENT` -- ``botocore.session.Session.create_client``: botocore registers a
  client's retry handler after the client exists and emits nothing afterwards, so "every client a
  session creates" needs this one hook point. Held by every session and global installation.
* :data:`SIGNING_CLOCK` -- ``botocore.auth.get_current_datetime``: SigV4 takes its timestamp from
  it, and no event lets a handler shift it. Held by each client that measured a clock skew.
* :data:`AIO_CREATE_CLIENT` -- ``aiobotocore.client.AioClientCreator.create_client``: aiobotocore's
  sessions (aioboto3's too) build every client in this coroutine and never call botocore's
  ``Session.create_client``; it registers the client's retry handler before returning, as botocore's
  does. Held with :data:`CREATE_CLIENT` by every installation, but applied only once aiobotocore is
  imported (never imported by us: :mod:`.installation` applies it when the application imports it).
  Not ``AioSession._create_client``: ``aiobotocore.session`` imports botocore first, so the launcher
  installs while that module is still half executed, before ``AioSession`` exists; ``aiobotocore.client``
  is imported only after botocore.

The discipline (wrapt's and OpenTelemetry's unwrap rules, made strict):

* **Reference-counted by holders.** A patch is applied when its first holder acquires it and
  undone when its last holder releases it -- whichever installation that is (session, global or
  client-only). A holder that is garbage-collected releases its share.
* **Undo only our own layer.** The original is put back only if the attribute still holds *our*
  function. If another library wrapped on top of us afterwards (OpenTelemetry, ddtrace, a test's
  mock), taking ours out would either drop their wrapper or leave them calling what we removed:
  the chain stays in place and our layer becomes a pass-through, re-armed if we are needed again.
* **Our layer never dies.** A reference taken while patched (``from botocore.auth import
  get_current_datetime``, a bound ``session.create_client``) keeps working after the undo: each
  layer calls the original it captured when it was made, never a module global.
* **A hook failure never reaches the caller**: it is reported once and the original's result is
  returned unchanged.
"""

from __future__ import annotations

import enum
import functools
import importlib
import importlib.util
import inspect
import sys
import logging
import weakref
from collections.abc import Callable
from typing import Any

from . import process
from .failsafe import report_failure

logger = logging.getLogger("bedrock_hooks")

#: Attribute set on each of our layers: the name of the :class:`Patch` it belongs to.
MARK = "__bedrock_hooks_patch__"
_MAX_CHAIN = 32  # how far down a chain of ``__wrapped__`` we look for our layer

#: ``hook(result, *args, **kwargs) -> result``: runs after the original while the patch is held.
Hook = Callable[..., Any]


class State(str, enum.Enum):
    """Where a patch stands (``doctor`` prints it)."""

    OFF = "off"  #: the original is in place
    ON = "on"  #: our layer is the attribute
    UNDER = "on, under another wrapper"  #: another library wrapped on top of our layer
    PASS_THROUGH = "pass-through, under another wrapper"  #: released, but left in their chain
    UNAVAILABLE = "unavailable"  #: this botocore has no such attribute


class Patch:
    """One process-wide replacement of ``module[.cls].attribute`` by a layer that calls a hook."""

    def __init__(self, module: str, cls: str | None, attribute: str, *, where: str, is_async: bool = False) -> None:
        self.name = ".".join(part for part in (module, cls, attribute) if part)
        self.where = where  #: how a hook failure is reported (``failsafe.report_failure``)
        #: The patched attribute is a coroutine function: the layer awaits it, then runs the (sync) hook.
        self.is_async = is_async
        self._module, self._cls, self.attribute = module, cls, attribute
        self._lock = process.lock()
        self._holders: dict[int, Any] = {}  # id(holder) -> weakref (or the holder, if not weakrefable)
        self._hook: Hook | None = None
        self._layer: Any = None  # our latest layer, kept while it may still sit in someone's chain
        self._original: Any = None
        self._unavailable = False
        #: True while held: our layer (anywhere in the chain) calls the hook; False: it passes through.
        self.engaged = False

    def __repr__(self) -> str:
        return f"<bedrock_hooks.patches.Patch {self.name} {self.state().value} holders={len(self._holders)}>"

    def set_hook(self, hook: Hook) -> None:
        """What the layer does after the original (set once by the module that owns the feature)."""
        self._hook = hook

    # -- holders ----------------------------------------------------------------------------------
    def acquire(self, holder: Any) -> bool:
        """Hold the patch for ``holder`` (idempotent); False when this botocore has no hook point."""
        with self._lock:
            if not self._engage():
                return False
            key = id(holder)
            if key not in self._holders:
                self._holders[key] = _weak(holder, functools.partial(self._holder_collected, key))
            return True

    def release(self, holder: Any) -> None:
        """Give up ``holder``'s share; the last one undoes the patch (idempotent)."""
        with self._lock:
            self._holders.pop(id(holder), None)
            if not self._holders:
                self._disengage()

    def held_by(self, holder: Any) -> bool:
        return id(holder) in self._holders

    def _holder_collected(self, key: int, _ref: Any = None) -> None:
        # Runs inside the garbage collector, perhaps while this thread holds the lock: never block. It
        # also runs during interpreter shutdown, where anything may fail; Python would print such a
        # failure as "Exception ignored in ..." on stderr, so nothing may escape.
        try:
            self._holders.pop(key, None)
            if self._lock.acquire(blocking=False):
                try:
                    if not self._holders:
                        self._disengage()
                finally:
                    self._lock.release()
        except Exception as exc:
            if not sys.is_finalizing():  # at shutdown even logging may fail: then say nothing
                try:
                    report_failure(self.where, exc)
                except Exception:
                    pass

    # -- applying and undoing (under the lock) ----------------------------------------------------
    def _owner(self) -> Any:
        owner = sys.modules.get(self._module) or importlib.import_module(self._module)
        return getattr(owner, self._cls) if self._cls else owner

    @property
    def loaded(self) -> bool:
        """Whether the patched module is fully imported (inspecting a patch never imports it: aiobotocore)."""
        module = sys.modules.get(self._module)
        return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)

    def _current(self, owner: Any) -> Any:
        return vars(owner).get(self.attribute)

    def _engage(self) -> bool:
        if self.engaged:
            return True
        owner = self._owner()
        current = self._current(owner)
        if current is None or (self.is_async and not _in_chain(current, self.name)
                               and not inspect.iscoroutinefunction(current)):
            if not self._unavailable:
                self._unavailable = True
                logger.warning("bedrock-hooks: %s not found in this botocore%s; the feature that needs it is off",
                               self.name, " (or not a coroutine)" if self.is_async else "")
            return False
        if not _in_chain(current, self.name):  # else our layer is still there, under another wrapper
            self._original = current
            self._layer = self._make_layer(current)
            setattr(owner, self.attribute, self._layer)
        self.engaged = True
        return True

    def _disengage(self) -> None:
        if not self.engaged:
            return
        self.engaged = False  # from here on every layer of ours passes through
        owner = self._owner()
        if self._current(owner) is self._layer:
            setattr(owner, self.attribute, self._original)
            self._layer = self._original = None
        # else: another library wrapped on top of us; leave its chain (our layer is now a no-op)

    def _make_layer(self, original: Any) -> Callable[..., Any]:
        patch = self

        def finish(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            hook = patch._hook
            if not patch.engaged or hook is None:
                return result
            try:
                return hook(result, *args, **kwargs)
            except Exception as exc:  # the caller gets what the original returned
                report_failure(patch.where, exc)
                return result

        if self.is_async:
            @functools.wraps(original)
            async def async_layer(instance: Any, *args: Any, **kwargs: Any) -> Any:
                bound = original.__get__(instance, type(instance))
                return finish(await bound(*args, **kwargs), (instance, *args), kwargs)

            setattr(async_layer, MARK, self.name)
            return async_layer
        if self._cls is None:
            @functools.wraps(original)
            def layer(*args: Any, **kwargs: Any) -> Any:
                return finish(original(*args, **kwargs), args, kwargs)  # the captured original, never a global
        else:
            @functools.wraps(original)
            def layer(instance: Any, *args: Any, **kwargs: Any) -> Any:
                # Bind what we replaced, so a wrapt/OpenTelemetry wrapper under us sees its instance.
                bound = original.__get__(instance, type(instance))
                return finish(bound(*args, **kwargs), (instance, *args), kwargs)

        setattr(layer, MARK, self.name)
        return layer

    # -- inspection -------------------------------------------------------------------------------
    def state(self) -> State:
        """Where the patch stands now (for tests and ``doctor``)."""
        if not self.loaded:
            return State.OFF if importlib.util.find_spec(self._module.partition(".")[0]) else State.UNAVAILABLE
        try:
            current = self._current(self._owner())
        except Exception:
            return State.UNAVAILABLE
        if current is None:
            return State.UNAVAILABLE
        if self._layer is not None and current is self._layer:
            return State.ON if self.engaged else State.PASS_THROUGH
        if _in_chain(current, self.name):
            return State.UNDER if self.engaged else State.PASS_THROUGH
        return State.OFF


def _in_chain(func: Any, name: str) -> bool:
    """Whether one of our layers for ``name`` is ``func`` or anywhere in its ``__wrapped__`` chain."""
    for _ in range(_MAX_CHAIN):
        if func is None:
            return False
        try:
            if getattr(func, MARK, None) == name:
                return True
            func = getattr(func, "__wrapped__", None)
        except Exception:  # a hostile proxy: treat it as the end of the chain
            return False
    return False


def _weak(holder: Any, callback: Callable[[Any], None]) -> Any:
    try:
        return weakref.ref(holder, callback)
    except TypeError:  # a string or other plain token: held until released
        return holder


#: ``botocore.session.Session.create_client``: attaches the hooks to every client a covered session makes.
CREATE_CLIENT = Patch("botocore.session", "Session", "create_client", where="create-client")
#: ``botocore.auth.get_current_datetime``: shifts the one signature a corrected client armed.
SIGNING_CLOCK = Patch("botocore.auth", None, "get_current_datetime", where="signing-clock")

#: ``aiobotocore.client.AioClientCreator.create_client``: the same for the clients aiobotocore sessions make.
AIO_CREATE_CLIENT = Patch("aiobotocore.client", "AioClientCreator", "create_client", where="create-client",
                          is_async=True)

ALL = (CREATE_CLIENT, SIGNING_CLOCK, AIO_CREATE_CLIENT)


def report() -> list[tuple[str, str, int]]:
    """``(patched function, state, holders)`` for every process-wide patch: what ``doctor`` prints."""
    return [(patch.name, patch.state().value, len(patch._holders)) for patch in ALL]
