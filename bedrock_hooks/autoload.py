"""Opt-in always-on mode: a ``.pth`` file that activates bedrock-hooks in every interpreter.

For environments where ``bedrock-hooks run`` cannot wrap the entry point (images with a fixed
``CMD``, process managers, notebooks). ``bedrock-hooks enable-pth`` writes
``bedrock_hooks_autoload.pth`` into site-packages; site.py executes its single line at every
interpreter start of that environment. The line is built so that it costs ~nothing while the mode
is off:

* it only reads ``BEDROCK_HOOKS_AUTOLOAD`` (``os`` is already imported by site.py) and stops there
  unless the value is 1/true/yes/on — no file is opened and no module imported;
* when on, it locates the package with ``importlib.util.find_spec`` (which does *not* import
  ``bedrock_hooks``) and executes ``bedrock_hooks/bootstrap/sitecustomize.py`` under the module
  name ``_bedrock_hooks_autoload``: the same lazy bootstrap the launcher uses, so botocore, wrapt
  and ``bedrock_hooks`` are still imported only when the application imports botocore;
* any failure prints one line to stderr and the interpreter continues.

Deliberately, this module is *not* what the ``.pth`` line imports: it imports ``site``, ``sysconfig``
and ``pathlib``, which every interpreter of the environment would then pay for. This module only
writes, removes and inspects the file (for the CLI and ``doctor``).
"""

from __future__ import annotations

import os
import site
import sysconfig
from collections.abc import Mapping
from pathlib import Path

PTH_NAME = "bedrock_hooks_autoload.pth"
ENV_VAR = "BEDROCK_HOOKS_AUTOLOAD"
MODULE_NAME = "_bedrock_hooks_autoload"

_ON = ("1", "true", "yes", "on", "enable", "enabled")

_LOADER = (
    "try:\n"
    " import importlib.util as u, os.path as p, sys\n"
    " s = u.find_spec('bedrock_hooks')\n"
    " f = p.join(s.submodule_search_locations[0], 'bootstrap', 'sitecustomize.py')\n"
    f" l = u.spec_from_file_location('{MODULE_NAME}', f)\n"
    " m = u.module_from_spec(l); sys.modules[l.name] = m; l.loader.exec_module(m)\n"
    "except Exception as e:\n"
    " import sys; sys.modules.pop('" + MODULE_NAME + "', None)\n"
    " sys.stderr.write('bedrock-hooks: autoload skipped (%s: %s)\\n' % (type(e).__name__, e))\n"
)

#: The single line written to the ``.pth`` file (site.py executes lines starting with ``import``).
PTH_LINE = (
    f"import os; os.environ.get({ENV_VAR!r}, '').strip().lower() in {_ON!r} "
    f"and exec({_LOADER!r}, {{}})"
)

#: What a bootstrap module's ``status`` means. ``sys.modules["_bedrock_hooks_bootstrap"]`` is the copy
#: that counts; a second copy (the launcher's ``sitecustomize`` after the always-on ``.pth``, which
#: site.py runs first, or the reverse) finds it and stays ``passive``. Documented in docs/zero-code.md
#: and ``bedrock-hooks --help``; a test checks that the bootstrap sets no value missing here.
BOOTSTRAP_STATUSES = {
    "waiting-for-botocore": "active: installs when the application first imports botocore",
    "installed": "install_global() ran: every botocore session is covered",
    "disabled": "BEDROCK_HOOKS_ENABLED is off: nothing imported or patched",
    "inactive": "nothing to harden (botocore and wrapt not importable)",
    "failed": "activation failed (see .error); the app runs as if bedrock-hooks were absent",
    "passive": "another copy was active first (e.g. .pth plus launcher): this one did nothing",
}

STATUS_HELP = ("bootstrap status, sys.modules['_bedrock_hooks_bootstrap'].status in the application:\n"
               + "\n".join(f"  {name:<21} {meaning}" for name, meaning in BOOTSTRAP_STATUSES.items()))

HEADER = (
    "# bedrock-hooks always-on mode (written by `bedrock-hooks enable-pth`; remove with\n"
    f"# `bedrock-hooks disable-pth`). Does nothing unless {ENV_VAR}=1 is set. See docs/zero-code.md.\n"
)


def requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``BEDROCK_HOOKS_AUTOLOAD`` asks for activation (the same test as the ``.pth`` line)."""
    env = os.environ if environ is None else environ
    return env.get(ENV_VAR, "").strip().lower() in _ON


def default_directory(user: bool = False) -> Path:
    """Where ``enable-pth`` writes: this interpreter's purelib (the active venv), or the user site."""
    if user:
        return Path(site.getusersitepackages())
    return Path(sysconfig.get_paths()["purelib"])


def site_directories() -> list[Path]:
    """Every directory whose ``.pth`` files this interpreter processes at startup."""
    dirs: list[Path] = []
    try:
        dirs.extend(Path(d) for d in site.getsitepackages())
    except Exception:  # some embedded/virtualenv site.py variants lack it
        pass
    try:
        if site.ENABLE_USER_SITE:
            dirs.append(Path(site.getusersitepackages()))
    except Exception:
        pass
    purelib = Path(sysconfig.get_paths()["purelib"])
    if purelib not in dirs:
        dirs.append(purelib)
    return dirs


def installed_files() -> list[Path]:
    """The autoload ``.pth`` files present in this interpreter's site directories."""
    return [d / PTH_NAME for d in site_directories() if (d / PTH_NAME).is_file()]


def enable(directory: Path | None = None, *, user: bool = False) -> Path:
    """Write the ``.pth`` file (idempotent); returns its path. Raises OSError if not writable."""
    target = Path(directory) if directory is not None else default_directory(user)
    target.mkdir(parents=True, exist_ok=True)
    path = target / PTH_NAME
    tmp = path.with_suffix(".pth.tmp")
    tmp.write_text(HEADER + PTH_LINE + "\n", encoding="utf-8")
    os.replace(tmp, path)  # never leave a half-written .pth for the next interpreter to execute
    return path


def disable(directory: Path | None = None, *, user: bool = False) -> list[Path]:
    """Remove the ``.pth`` file(s): from ``directory``/the user site, or from every site directory."""
    if directory is not None or user:
        candidates = [(Path(directory) if directory is not None else default_directory(user)) / PTH_NAME]
    else:
        candidates = [d / PTH_NAME for d in site_directories()]
    removed = []
    for path in candidates:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed
