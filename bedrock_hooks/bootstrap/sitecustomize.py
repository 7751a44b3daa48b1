"""bedrock-hooks zero-code bootstrap, imported by the interpreter as ``sitecustomize``.

``bedrock-hooks run -- CMD`` puts this file's directory at the front of ``PYTHONPATH``, so every
Python process the command starts imports it before the application's first line. Why it is
written the way it is:

* **Costs ~nothing at startup.** Only ``os`` and ``sys`` (already loaded by then) are used. A tiny
  meta-path *trigger* waits for the application's first ``botocore`` import; only then is wrapt
  imported and a wrapt post-import hook registered for ``botocore.session``. (``import wrapt``
  alone pulls in ``importlib.metadata`` and the ``email`` package: tens of milliseconds that a
  process which never touches botocore must not pay.) botocore itself is never imported here.
* **Installs before the first client.** The post-import hook runs as soon as ``botocore.session``
  has executed, and calls :func:`bedrock_hooks.install_global`, which wraps
  ``Session.create_client`` for every session: boto3's default session and any created later.
* **Never breaks the interpreter.** Every step is guarded; a missing dependency, a broken
  configuration or a bug ends in one warning (or a debug log) and the application runs as if
  bedrock-hooks were absent. ``BEDROCK_HOOKS_ENABLED=0`` means nothing is imported or patched.
* **Stays out of the way.** It removes its directory from ``PYTHONPATH`` (so child processes start
  plain, unless ``BEDROCK_HOOKS_PROPAGATE=1``) and from ``sys.path``, and then runs the
  ``sitecustomize`` the application would have had without the launcher.

The same file is also executed by the opt-in ``bedrock_hooks_autoload.pth`` (see
``bedrock_hooks.autoload``) under the module name ``_bedrock_hooks_autoload``; in that mode it only
activates: site.py imports the real ``sitecustomize`` itself afterwards.

This module is imported by interpreters the launcher did not choose, so it must stay importable on
every supported Python and depend on nothing but the standard library at import time.
"""

import os
import sys

#: ``sys.modules`` key under which the active bootstrap registers itself (tests and doctor read it,
#: and a second copy, e.g. autoload plus launcher, sees it and stays passive).
STATE_KEY = "_bedrock_hooks_bootstrap"
#: Same spellings as :func:`bedrock_hooks.config.parse_bool` (an empty value means off there too).
_FALSE = ("0", "false", "no", "off", "disable", "disabled", "")
_TRUE = ("1", "true", "yes", "on", "enable", "enabled")
_HERE = os.path.dirname(os.path.abspath(__file__))

#: What happened in this process: "inactive", "disabled", "waiting-for-botocore", "installed",
#: "failed" (with :data:`error`), or "passive" when another copy is already active.
status = "inactive"
origin = "launcher" if __name__ == "sitecustomize" else "autoload"
error: str | None = None
installation = None  # the bedrock_hooks.Installation once installed

_warned: set = set()


def _log(level: str, message: str, *args: object, **kwargs: object) -> None:
    """Log through ``logging`` only when there is something to say: importing it costs ~3 ms."""
    try:
        import logging

        getattr(logging.getLogger("bedrock_hooks.bootstrap"), level)("bedrock-hooks: " + message, *args, **kwargs)
    except Exception:
        pass


def _warn(message: str, *args: object) -> None:
    """One warning per message per process: a crash-looping worker must not flood its logs."""
    if message in _warned:
        return
    _warned.add(message)
    _log("warning", message, *args)


def _enabled() -> bool:
    return os.environ.get("BEDROCK_HOOKS_ENABLED", "1").strip().lower() not in _FALSE


def _propagate() -> bool:
    return os.environ.get("BEDROCK_HOOKS_PROPAGATE", "").strip().lower() in _TRUE


def _is_here(entry: str) -> bool:
    try:
        return os.path.normcase(os.path.realpath(entry or os.curdir)) == os.path.normcase(os.path.realpath(_HERE))
    except Exception:
        return False


# -- launcher housekeeping ----------------------------------------------------------------------

def _forget_self() -> None:
    """Drop the bootstrap directory from ``sys.path`` and (unless propagating) ``PYTHONPATH``.

    ``sys.path``: the application sees the path it would have had, and a chained sitecustomize that
    itself chains cannot find this file again. ``PYTHONPATH``: child processes start as plain
    Python, so nothing is installed twice and ``bedrock-hooks run -- make`` does not silently
    hook every Python tool the build runs.
    """
    sys.path[:] = [entry for entry in sys.path if not _is_here(entry)]
    if _propagate():
        return
    raw = os.environ.get("PYTHONPATH")
    if raw is None:
        return
    entries = raw.split(os.pathsep)
    kept = [entry for entry in entries if not (entry and _is_here(entry))]
    if len(kept) == len(entries):
        return
    if any(kept):
        os.environ["PYTHONPATH"] = os.pathsep.join(kept)
    else:
        del os.environ["PYTHONPATH"]


def _path_finder():
    """The import system's own PathFinder: it sits on ``sys.meta_path`` already, while importing
    ``importlib.machinery`` for it would load the ``importlib`` package and ``warnings`` into every
    process the launcher starts."""
    for finder in sys.meta_path:
        if getattr(finder, "__name__", None) == "PathFinder" and hasattr(finder, "find_spec"):
            return finder
    import importlib.machinery

    return importlib.machinery.PathFinder


def _chain() -> None:
    """Run the ``sitecustomize`` that the application would have had (ddtrace does this too).

    It is looked up on ``sys.path`` exactly as site.py would (this directory is no longer on it),
    executed under the name ``sitecustomize`` and left in ``sys.modules`` under that name. An error
    in it is reported the way site.py reports one, and does not stop the application.
    """
    spec = _path_finder().find_spec("sitecustomize", list(sys.path))
    if spec is None or spec.loader is None or (spec.origin and _is_here(os.path.dirname(spec.origin))):
        return
    import importlib.util

    me = sys.modules.get("sitecustomize")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        if me is not None:  # the import system pops sys.modules["sitecustomize"] after we return
            sys.modules["sitecustomize"] = me
        if sys.flags.verbose:
            sys.excepthook(*sys.exc_info())
        else:
            sys.stderr.write("Error in sitecustomize; set PYTHONVERBOSE for traceback:\n"
                             "%s: %s\n" % (err.__class__.__name__, err))


# -- activation ---------------------------------------------------------------------------------

class _BotocoreTrigger:
    """A meta-path finder that finds nothing: it only notices the first import of botocore.

    On that first ``botocore`` (or ``botocore.*``) lookup it registers the wrapt post-import hook
    for ``botocore.session`` and returns None, so the normal finders import botocore as usual.
    """

    bedrock_hooks_trigger = True

    def __init__(self) -> None:
        self.fired = False

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if self.fired or not (fullname == "botocore" or fullname.startswith("botocore.")):
            return None
        self.fired = True
        _register_hook()
        return None

    def __repr__(self) -> str:
        return "<bedrock-hooks botocore import trigger fired=%s>" % self.fired


def _register_hook() -> None:
    global status, error
    try:
        import wrapt
    except Exception as exc:
        status, error = "failed", "wrapt: %s" % exc
        import importlib.util

        try:
            has_botocore = importlib.util.find_spec("botocore") is not None
        except Exception:
            has_botocore = False
        if has_botocore:
            _warn("wrapt is not importable (%s); Bedrock clients in this process are not hardened", exc)
        else:  # the application asked for botocore, which is not there either: nothing to harden
            status = "inactive"
            _log("debug", "neither wrapt nor botocore importable; nothing to do")
        return
    try:
        wrapt.register_post_import_hook(_on_botocore_session, "botocore.session")
    except Exception as exc:
        _failed(exc)


def _remove_trigger() -> None:
    try:
        for finder in list(sys.meta_path):
            if getattr(finder, "bedrock_hooks_trigger", False):
                sys.meta_path.remove(finder)
    except Exception:
        pass


def _import_bedrock_hooks():
    """``import bedrock_hooks``; if it is not on ``sys.path`` (launcher run from a source checkout
    with ``python -m``), load the copy this bootstrap belongs to."""
    try:
        import bedrock_hooks

        return bedrock_hooks
    except ModuleNotFoundError as exc:
        if exc.name != "bedrock_hooks":
            raise
    import importlib.util

    package_dir = os.path.dirname(_HERE)
    spec = importlib.util.spec_from_file_location(
        "bedrock_hooks", os.path.join(package_dir, "__init__.py"), submodule_search_locations=[package_dir])
    if spec is None or spec.loader is None:
        raise ImportError("bedrock_hooks not found next to %s" % _HERE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bedrock_hooks"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("bedrock_hooks", None)
        raise
    return module


def _on_botocore_session(module: object) -> None:
    """wrapt post-import hook: botocore.session has just executed; no client can exist yet."""
    global status, installation
    _remove_trigger()
    try:
        if not _enabled():  # the application may have switched it off before importing botocore
            status = "disabled"
            return
        # The import system binds ``botocore.session`` on its package only after this hook returns;
        # install_global() reads ``botocore.session.Session``, so bind it now (same object).
        package = sys.modules.get("botocore")
        if package is not None and getattr(package, "session", None) is not module:
            setattr(package, "session", module)
        installation = _import_bedrock_hooks().install_global()
        status = "installed" if getattr(installation, "active", False) else "disabled"
        _log("debug", "installed on every botocore session (%s)", origin)
    except Exception as exc:
        _failed(exc)


def _failed(exc: BaseException) -> None:
    global status, error
    status, error = "failed", "%s: %s" % (type(exc).__name__, exc)
    _warn("not active in this process (%s: %s); the application runs without it", type(exc).__name__, exc)
    _log("debug", "bootstrap failure", exc_info=exc)


def activate() -> None:
    """Arrange for :func:`bedrock_hooks.install_global` to run when botocore is first imported."""
    global status
    existing = sys.modules.get(STATE_KEY)
    me = sys.modules.get(__name__)
    if existing is not None and existing is not me:
        status = "passive"  # e.g. autoload already active and the launcher used as well
        return
    if me is not None:
        sys.modules[STATE_KEY] = me
    if not _enabled():
        status = "disabled"
        return
    status = "waiting-for-botocore"
    if "botocore" in sys.modules:  # imported by an earlier .pth or sitecustomize: hook directly
        _register_hook()
    else:
        sys.meta_path.insert(0, _BotocoreTrigger())


def _main() -> None:
    if origin == "launcher":
        for step in (_forget_self, activate, _chain):
            try:
                step()
            except Exception as exc:  # never stop the interpreter from starting
                if step is activate:
                    _failed(exc)
                else:
                    _warn("bootstrap step %s failed (%s: %s); continuing", step.__name__, type(exc).__name__, exc)
    else:
        try:
            activate()
        except Exception as exc:
            _failed(exc)


_main()
