"""The launcher imports nothing it does not need: what a process that only ``exec``\\ s may load.

Measured as a user starts it (the installed console scripts and ``python -m bedrock_hooks run``),
with ``python -X importtime``, which lists every module a process imports. The launched command does
not inherit ``-X importtime``, so the list is the launcher's own. This is behaviour, not speed:
``bench/startup.py`` measures the time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _launcher import console_script

REPO = Path(__file__).resolve().parents[1]
#: Everything the launcher process may import beyond what its interpreter loads anyway.
LAUNCHER_MODULES = {"bedrock_hooks", "bedrock_hooks.cli", "bedrock_hooks.launcher", "bedrock_hooks.__main__"}


def imported(*args: str) -> set[str]:
    """Modules imported by ``python -X importtime ARGS`` (the exec'd command's imports are not listed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEDROCK_HOOKS_", "PYTHON"))}
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    names = {line.rsplit("|", 1)[1].strip() for line in lines[1:]}  # the first line is the header
    assert names, proc.stderr
    return names


COMMAND = ("--", sys.executable, "-c", "pass")


def test_python_m_bedrock_hooks_run_imports_only_the_launcher():
    """Regression: `python -m bedrock_hooks run` imported the whole package, botocore and urllib."""
    baseline = imported("-c", "import runpy")  # what `python -m` itself loads
    extra = imported("-m", "bedrock_hooks", "run", *COMMAND) - baseline
    assert extra <= LAUNCHER_MODULES, sorted(extra - LAUNCHER_MODULES)


@pytest.mark.parametrize(("script", "args"), [("bedrock-hooks", ("run", *COMMAND)), ("bedrock-hooks-run", COMMAND)])
def test_console_scripts_import_only_the_launcher(script, args):
    baseline = imported("-c", "import re, sys")  # what pip's console-script wrapper imports itself
    extra = imported(console_script(script), *args) - baseline
    assert extra <= LAUNCHER_MODULES, sorted(extra - LAUNCHER_MODULES)


def test_launcher_help_imports_no_argparse():
    extra = imported("-m", "bedrock_hooks", "run", "--help") - imported("-c", "import runpy")
    assert extra <= LAUNCHER_MODULES, sorted(extra - LAUNCHER_MODULES)


def test_other_commands_still_get_the_whole_cli():
    """The dispatcher loads a subcommand's modules when it runs (here explain: the catalog, settings)."""
    names = imported("-m", "bedrock_hooks", "explain", "ThrottlingException")
    assert {"argparse", "bedrock_hooks.explain", "bedrock_hooks.catalog", "bedrock_hooks.config"} <= names
