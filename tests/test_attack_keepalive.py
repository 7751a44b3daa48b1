"""A stream being read while the library is uninstalled (issue 11, defect 14, real request in flight).

tests/test_keepalive_uninstall.py checks a connection taken out of the pool by hand. Here the
connection is held by a real ConverseStream the application is still reading when ``uninstall()``
runs: once the stream ends, its socket goes back to the pool with botocore's options.
"""

from __future__ import annotations

import socket

import pytest

import bedrock_hooks
from bedrock_hooks.testing import EventFrame, Reply
from conftest import make_client, new_session
from test_keepalive_uninstall import kernel_default, pooled_options

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="per-socket keep-alive checks need Linux")


@pytest.mark.parametrize("how", ["installation", "uninstall(session)", "uninstall()"])
def test_stream_read_across_uninstall_returns_its_socket_with_botocores_options(how, server, fake_time):
    session = new_session()
    installation = (bedrock_hooks.install(runtime=fake_time.runtime(), keepalive_idle=19) if how == "uninstall()"
                    else bedrock_hooks.install(session, runtime=fake_time.runtime(), keepalive_idle=19))
    client = make_client(session, server)
    server.script(Reply.stream(EventFrame.converse_text(["one", "two", "three"])))
    stream = client.converse_stream(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                                    messages=[{"role": "user", "content": [{"text": "hi"}]}])["stream"]
    events = iter(stream)
    first = next(events)
    if how == "installation":
        installation.uninstall()
    elif how == "uninstall(session)":
        bedrock_hooks.uninstall(session)
    else:
        bedrock_hooks.uninstall()
    rest = list(events)
    assert "messageStart" in first and any("messageStop" in e for e in rest)
    assert pooled_options(client) == [kernel_default()]
