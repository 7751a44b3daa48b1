"""``bedrock-hooks run -- CMD``: start a command with the zero-code bootstrap on ``PYTHONPATH``.

The launcher is a process that exists for a few milliseconds before it ``exec``\\ s the command,
so all it may cost is its own interpreter start. It therefore imports only ``os`` and ``sys``
(both loaded before any user code runs) and parses its three options by hand: ``argparse``,
``pathlib`` and the rest of the package (botocore included) would add more than the interpreter
start itself. Not even ``from __future__ import annotations``: that is a real import too.
``tests/test_launcher_imports.py`` asserts what the launcher imports; ``bench/startup.py``
measures what a user pays.

Used by ``bedrock-hooks run``, ``bedrock-hooks-run`` and ``python -m bedrock_hooks run``, which
all reach :func:`main` without importing anything else.
"""

import os
import sys

TYPE_CHECKING = False  # typing itself is not imported: it is not loaded at interpreter start
if TYPE_CHECKING:
    from collections.abc import Mapping

USAGE = "usage: {prog} [-h] [--propagate] [--] COMMAND [ARG ...]"

HELP = """\
Run COMMAND with the bootstrap sitecustomize on PYTHONPATH: every botocore session of its Python
process is hardened when the application imports botocore (nothing is imported before that).
The command replaces this process (same PID, signals and exit status).

  -h, --help    show this help message and exit
  --propagate   keep the bootstrap for child processes too (sets BEDROCK_HOOKS_PROPAGATE=1)

Example: {prog} -- python app.py
"""


def bootstrap_dir() -> str:
    """The directory holding the bootstrap ``sitecustomize.py`` (package data), as a string.

    A string, not a ``pathlib.Path``: importing pathlib alone costs several milliseconds at launch.
    """
    return os.path.join(os.path.dirname(os.path.realpath(__file__)), "bootstrap")


def _same_directory(entry: str, directory: str) -> bool:
    return os.path.normcase(os.path.realpath(entry)) == os.path.normcase(directory)


def launch_environment(environ: "Mapping[str, str]", *, propagate: bool = False) -> dict[str, str]:
    """The environment for the launched command: the bootstrap first on ``PYTHONPATH``, once.

    An entry already naming the bootstrap (nested launchers, ``--propagate``) is dropped before the
    directory is prepended again, so it never appears twice.
    """
    env = dict(environ)
    here = bootstrap_dir()
    existing = [e for e in env.get("PYTHONPATH", "").split(os.pathsep) if e]
    kept = [e for e in existing if not _same_directory(e, here)]
    env["PYTHONPATH"] = os.pathsep.join([here, *kept])
    if propagate:
        env["BEDROCK_HOOKS_PROPAGATE"] = "1"
    return env


def run_command(command: list[str], *, propagate: bool = False, prog: str = "bedrock-hooks run") -> int:
    """Replace this process with ``command`` under the bootstrap (a child process on Windows)."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print(f"{prog}: no command given ({USAGE.format(prog=prog)})", file=sys.stderr)
        return 2
    env = launch_environment(os.environ, propagate=propagate)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if os.name == "nt":  # no real exec on Windows: run it and pass the exit status on
            import subprocess

            return subprocess.call(command, env=env)
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        print(f"{prog}: command not found: {command[0]}", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"{prog}: permission denied: {command[0]}", file=sys.stderr)
        return 126
    except OSError as exc:
        print(f"{prog}: cannot execute {command[0]}: {exc}", file=sys.stderr)
        return 126
    return 0  # pragma: no cover - execvpe does not return


def main(argv: list[str] | None = None, *, prog: str = "bedrock-hooks-run") -> int:
    """``[-h] [--propagate] [--] COMMAND ...``: options end at ``--`` or at the command's first word."""
    args = list(sys.argv[1:] if argv is None else argv)
    propagate = False
    while args and args[0].startswith("-") and args[0] != "--":
        option = args.pop(0)
        if option in ("-h", "--help"):
            print(USAGE.format(prog=prog) + "\n\n" + HELP.format(prog=prog), end="")
            return 0
        if option != "--propagate":
            print(f"{USAGE.format(prog=prog)}\n{prog}: error: unrecognized option {option!r} "
                  "(put the command after --)", file=sys.stderr)
            return 2
        propagate = True
    return run_command(args, propagate=propagate, prog=prog)
