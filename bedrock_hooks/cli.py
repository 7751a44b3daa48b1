"""The ``bedrock-hooks`` command: a dispatcher that imports a subcommand's module only when it runs.

* ``bedrock-hooks run -- python app.py`` (also ``bedrock-hooks-run``): :mod:`bedrock_hooks.launcher`,
  which imports nothing but ``os`` and ``sys`` before it ``exec``\\ s the command;
* ``bedrock-hooks doctor``: :mod:`bedrock_hooks.doctor`;
* ``bedrock-hooks explain`` and ``catalog``: :mod:`bedrock_hooks.explain` and
  :mod:`bedrock_hooks.reference`, from the same catalog and settings the handlers use;
* ``bedrock-hooks enable-pth`` / ``disable-pth`` / ``bootstrap-path``: :mod:`bedrock_hooks.autoload`.

``run`` is recognised before ``argparse`` is even imported: the launcher's start is paid by every
command it launches, the others are interactive.
"""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence


def main(argv: "Sequence[str] | None" = None) -> int:
    """Entry point of ``bedrock-hooks`` and ``python -m bedrock_hooks``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"]:
        from .launcher import main as launch

        return launch(args[1:], prog="bedrock-hooks run")
    try:
        return _dispatch(args)
    except BrokenPipeError:  # `bedrock-hooks catalog | head`: the reader left, which is not an error
        import os

        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stops the flush-at-exit error too
        except OSError:
            pass
        return 0


def run_main(argv: "Sequence[str] | None" = None) -> int:
    """Entry point of ``bedrock-hooks-run``: ``bedrock-hooks-run [--propagate] [--] command ...``."""
    from .launcher import main as launch

    return launch(None if argv is None else list(argv), prog="bedrock-hooks-run")


# -- the interactive subcommands -----------------------------------------------------------------

def build_parser() -> "argparse.ArgumentParser":
    import argparse
    from pathlib import Path

    from . import __version__, autoload
    from .launcher import HELP

    parser = argparse.ArgumentParser(
        prog="bedrock-hooks", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Zero-code enablement and diagnostics for bedrock-hooks (Amazon Bedrock clients of "
                    "boto3/botocore).",
        epilog=autoload.STATUS_HELP)
    parser.add_argument("--version", action="version", version=f"bedrock-hooks {__version__}")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")

    run = sub.add_parser("run", help="run a command with bedrock-hooks installed in its Python processes",
                         description=HELP.format(prog="bedrock-hooks run"), add_help=False,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("command", nargs=argparse.REMAINDER)  # main() hands `run` to the launcher before argparse

    doc = sub.add_parser("doctor", help="check this host against the Bedrock troubleshooting advice")
    doc.add_argument("--endpoint", metavar="URL",
                     help="measure the local clock's offset from this endpoint's HTTP Date header")
    doc.add_argument("--timeout", type=float, default=5.0, help="seconds for the credential lookup and the endpoint")
    doc.add_argument("--json", action="store_true", help="print the checks as JSON")
    doc.add_argument("--verbose", "-v", action="store_true", help="also list options left at their defaults")

    exp = sub.add_parser("explain", help="show the catalog entry for an error and what bedrock-hooks does with it "
                                         "under the current BEDROCK_HOOKS_* settings")
    exp.add_argument("error", nargs="*", help="an error code, entry name, message or botocore error line")
    exp.add_argument("--status", type=int, help="the HTTP status, alone or with a code/message")
    exp.add_argument("--code", help="the error code, when the positional text is the message")
    exp.add_argument("--operation", help="the API operation that failed (Converse, InvokeModel, ConverseStream...); "
                                         "read from a botocore error line when given")
    exp.add_argument("--model", help="the model ID the call used (read from the message when it names one)")
    exp.add_argument("--region", help="the client's Region (default: AWS_REGION / AWS_DEFAULT_REGION)")

    cat = sub.add_parser("catalog", help="print every catalog entry")
    cat.add_argument("--format", choices=("text", "markdown", "json"), default="text")

    enable = sub.add_parser(
        "enable-pth", formatter_class=argparse.RawDescriptionHelpFormatter,
        help=f"write the always-on {autoload.PTH_NAME} into site-packages (inactive until {autoload.ENV_VAR}=1)",
        description=f"Write {autoload.PTH_NAME} into a site directory. Every interpreter of that environment then "
                    f"reads {autoload.ENV_VAR} at start and, only when it is 1/true/yes/on, activates the same lazy "
                    "bootstrap as `bedrock-hooks run`.\n\n" + autoload.STATUS_HELP)
    enable.add_argument("--dir", type=Path, help="the site directory to write to (default: this interpreter's "
                                                 "site-packages)")
    enable.add_argument("--user", action="store_true", help="write to the user site-packages directory")
    disable = sub.add_parser(
        "disable-pth", help=f"remove the always-on {autoload.PTH_NAME} (from every site directory of this "
                            "interpreter unless --dir/--user)",
        description=f"Remove {autoload.PTH_NAME}: by default from every site directory this interpreter processes "
                    "at startup, so no copy is left behind.")
    disable.add_argument("--dir", type=Path, help="remove it only from this directory")
    disable.add_argument("--user", action="store_true", help="remove it only from the user site-packages directory")

    sub.add_parser("bootstrap-path", help="print the directory to put on PYTHONPATH for always-on use")
    return parser


def _dispatch(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.subcommand is None:
        parser.print_help()
        return 2
    if args.subcommand == "explain" and not (args.error or args.status is not None or args.code):
        parser.error("explain needs an error code, a message or --status")
    return _COMMANDS[args.subcommand](args)


def _doctor(args: "argparse.Namespace") -> int:
    from dataclasses import asdict

    from .doctor import doctor, render_checks

    checks = doctor(endpoint=args.endpoint, timeout=args.timeout, verbose=args.verbose)
    if args.json:
        import json

        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print(render_checks(checks))
    return 1 if any(c.status == "fail" for c in checks) else 0


def _explain(args: "argparse.Namespace") -> int:
    from .explain import default_region, explain_lookup, render_explanation

    text = " ".join(args.error)
    found = explain_lookup(text, status=args.status, code=args.code, operation=args.operation, model=args.model,
                           region=args.region or default_region())
    if found is None:
        print(f"Not in the catalog: {text or args.code or args.status!r}. bedrock-hooks leaves such errors to "
              "botocore's own retry handler and adds no hint.")
        return 1
    print(render_explanation(found))
    return 0


def _catalog(args: "argparse.Namespace") -> int:
    from .reference import CATALOG_FORMATS

    print(CATALOG_FORMATS[args.format]())
    return 0


def _pth(args: "argparse.Namespace") -> int:
    from . import autoload

    try:
        if args.subcommand == "enable-pth":
            path = autoload.enable(args.dir, user=args.user)
            print(f"wrote {path}\nIt does nothing until {autoload.ENV_VAR}=1 is set in the environment.")
        else:
            removed = autoload.disable(args.dir, user=args.user)
            print("\n".join(f"removed {p}" for p in removed) or f"no {autoload.PTH_NAME} found")
    except OSError as exc:
        print(f"bedrock-hooks {args.subcommand}: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(args: "argparse.Namespace") -> int:
    from .launcher import main as launch

    return launch(args.command, prog="bedrock-hooks run")


def _bootstrap_path(args: "argparse.Namespace") -> int:
    from .launcher import bootstrap_dir

    print(bootstrap_dir())
    return 0


_COMMANDS = {"run": _run, "doctor": _doctor, "explain": _explain, "catalog": _catalog, "enable-pth": _pth,
             "disable-pth": _pth, "bootstrap-path": _bootstrap_path}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
