"""Interpreter shutdown after install(): nothing of the library may print at exit.

When the last reference to an installation goes away during interpreter shutdown, the patch it held
is released from a weakref callback, at a moment when ``import`` no longer works. Any exception there
is printed by Python as "Exception ignored in: ..." with a traceback on stderr: a process that ended
cleanly would look broken (and stderr-watching supervisors and CI would flag it). Plain botocore
prints nothing, so neither may the library.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROGRAMS = {
    "install() with a runtime": """
        import boto3, bedrock_hooks
        from bedrock_hooks import Runtime
        boto3.setup_default_session(region_name="us-east-1")
        bedrock_hooks.install(runtime=Runtime(sleep=lambda s: None))
    """,
    "install(session) kept in a global": """
        import boto3, bedrock_hooks
        from bedrock_hooks import Runtime
        session = boto3.Session(region_name="us-east-1")
        installation = bedrock_hooks.install(session, runtime=Runtime(sleep=lambda s: None))
        client = session.client("bedrock-runtime", aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="x")
    """,
    "install(client) kept in a global": """
        import boto3, bedrock_hooks
        from bedrock_hooks import Runtime
        client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                              aws_secret_access_key="x")
        installation = bedrock_hooks.install(client, runtime=Runtime(sleep=lambda s: None))
    """,
}


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_a_process_that_installed_exits_silently(program):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(PROGRAMS[program])], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "AWS_EC2_METADATA_DISABLED": "true"})
    assert proc.returncode == 0
    assert proc.stderr == ""
