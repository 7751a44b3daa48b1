"""``BEDROCK_HOOKS_LOG_LEVEL`` shows the library's messages even when the app configured no logging
(issue 12 §4), and never prints a line twice once the app does, proven with real interpreters.

Each test runs an unmodified application under ``bedrock-hooks run`` (or ``python -c``) against the
loopback server of this test process; a fallback chain makes the library log one real INFO line
(``bedrock-hooks: m -> alt (...)``) when model ``m`` has reached its end of life.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bedrock_hooks.testing import Reply

REPO = Path(__file__).resolve().parents[1]
EOL = Reply.error(404, "ResourceNotFoundException", "This model version has reached the end of its life.")
MOVED = "bedrock-hooks: m -> alt ("

APP = textwrap.dedent("""
    import logging, os, sys
    import boto3

    client = boto3.client("bedrock-runtime", endpoint_url=os.environ["APP_ENDPOINT"])
    if os.environ.get("APP_LOGGING") == "basic":  # configured only after the hooks are installed
        logging.basicConfig(format="APP %(name)s %(message)s", level=logging.INFO)
    elif os.environ.get("APP_LOGGING") == "package":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("PKG %(message)s"))
        logging.getLogger("bedrock_hooks").addHandler(handler)
    client.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    logging.getLogger("bedrock_hooks.fallbacks").debug("bedrock-hooks: a debug line")
    print("DONE")
""")


def environment(server, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEDROCK_HOOKS_", "AWS_", "PYTHON"))}
    env.update(PYTHONPATH=str(REPO), AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMIEXAMPLEKEY",
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, APP_ENDPOINT=server.url, BEDROCK_HOOKS_FALLBACKS="m=alt",
               PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


@pytest.fixture
def eol_server(server):
    server.handler = lambda request: EOL if request.model_id == "m" else None
    return server


def run_app(tmp_path: Path, server, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(APP)
    cmd = [sys.executable, "-m", "bedrock_hooks", "run", "--", sys.executable, str(script)]
    proc = subprocess.run(cmd, env=environment(server, **env), cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr
    assert [r.model_id for r in server.requests] == ["m", "alt"], "the fallback did not happen"
    return proc


def test_log_level_info_prints_the_librarys_info_lines_on_stderr(tmp_path, eol_server):
    proc = run_app(tmp_path, eol_server, BEDROCK_HOOKS_LOG_LEVEL="INFO")
    lines = proc.stderr.splitlines()
    assert len([line for line in lines if line.startswith(MOVED)]) == 1, proc.stderr
    assert all(line.startswith("bedrock-hooks: ") for line in lines), proc.stderr
    assert "a debug line" not in proc.stderr  # below the level asked for


def test_debug_level_shows_debug_lines_too(tmp_path, eol_server):
    proc = run_app(tmp_path, eol_server, BEDROCK_HOOKS_LOG_LEVEL="DEBUG")
    assert "bedrock-hooks: a debug line" in proc.stderr.splitlines()
    assert all(line.startswith("bedrock-hooks: ") for line in proc.stderr.splitlines()), proc.stderr


def test_app_configuring_logging_after_install_gets_each_line_once(tmp_path, eol_server):
    proc = run_app(tmp_path, eol_server, BEDROCK_HOOKS_LOG_LEVEL="INFO", APP_LOGGING="basic")
    lines = proc.stderr.splitlines()
    moved = [line for line in lines if MOVED in line]
    assert len(moved) == 1 and moved[0].startswith(f"APP bedrock_hooks.fallbacks {MOVED}"), proc.stderr
    assert not any(line.startswith("bedrock-hooks:") for line in lines), proc.stderr


def test_app_handler_on_the_package_logger_wins(tmp_path, eol_server):
    proc = run_app(tmp_path, eol_server, BEDROCK_HOOKS_LOG_LEVEL="INFO", APP_LOGGING="package")
    moved = [line for line in proc.stderr.splitlines() if MOVED in line]
    assert len(moved) == 1 and moved[0].startswith(f"PKG {MOVED}"), proc.stderr


def test_without_a_log_level_info_lines_stay_silent(tmp_path, eol_server):
    proc = run_app(tmp_path, eol_server)
    assert proc.stderr == ""


def test_warnings_are_printed_once_with_or_without_a_level(tmp_path, eol_server):
    for extra in ({}, {"BEDROCK_HOOKS_LOG_LEVEL": "INFO"}):
        eol_server.reset()
        eol_server.handler = lambda request: EOL if request.model_id == "m" else None
        proc = run_app(tmp_path, eol_server, BEDROCK_HOOKS_MAX_ATTEMPTS="banana", **extra)
        named = [line for line in proc.stderr.splitlines() if "BEDROCK_HOOKS_MAX_ATTEMPTS" in line]
        assert len(named) == 1 and named[0].startswith("bedrock-hooks: ignoring"), proc.stderr
