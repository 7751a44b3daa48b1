"""Defect #9: Region failover only where the new Region's endpoint is known.

An ``endpoint_url`` whose host names no Region (a proxy, a PrivateLink alias) used to be "failed
over" by signing for the new Region while sending to the same host, and ``served_by`` claimed the new
Region. Now: a standard regional host is rewritten, a pinned ``REGION=URL`` is used, anything else is
skipped with a note in the hint.

Hosts such as ``bedrock-runtime.us-east-1.amazonaws.com`` are reached without leaving the machine:
the client sends plain HTTP through ``Config(proxies=...)`` to the loopback server, which receives
the absolute-form request and its real ``Host`` header.
"""

from __future__ import annotations

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks import fallbacks
from bedrock_hooks.testing import Reply, sigv4_scope
from conftest import converse, new_session
from _shared_state import fresh_shared_state  # noqa: F401  (autouse)

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"



def failover_client(server, fake_time, endpoint_url: str, regions: str, *, proxy: bool):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=2, fallback_regions=regions)
    config = Config(retries={"mode": "standard"}, read_timeout=5, connect_timeout=2,
                    proxies={"http": server.url} if proxy else None)
    return session.client("bedrock-runtime", endpoint_url=endpoint_url, config=config)


def host(request) -> str:
    return request.headers.get("Host", "")


def test_endpoint_without_a_region_is_not_failed_over(server, fake_time):
    server.default = Reply.service_unavailable()
    client = failover_client(server, fake_time, server.url, "us-west-2", proxy=False)
    with pytest.raises(ClientError) as raised:
        converse(client, MODEL)
    assert [sigv4_scope(r)["region"] for r in server.requests] == ["us-east-1", "us-east-1"]
    info = raised.value.response["BedrockHooks"]
    assert "route" not in info
    assert any("failover to us-west-2 skipped" in note for note in info["details"]["notes"])
    assert "failover to us-west-2 skipped" in str(raised.value)


def test_privatelink_alias_is_not_failed_over(server, fake_time):
    vpce = "http://vpce-0a1b2c3d4e5f-abcdefgh.bedrock-runtime.us-east-1.vpce.amazonaws.com"
    server.default = Reply.service_unavailable()
    client = failover_client(server, fake_time, vpce, "us-west-2", proxy=True)
    with pytest.raises(ClientError) as raised:
        converse(client, MODEL)
    assert {host(r) for r in server.requests} == {vpce.removeprefix("http://")}
    assert [sigv4_scope(r)["region"] for r in server.requests] == ["us-east-1", "us-east-1"]
    assert any("failover to us-west-2 skipped" in note for note in raised.value.response["BedrockHooks"]["details"]["notes"])


def test_standard_regional_host_fails_over_to_the_new_regions_host(server, fake_time):
    home = "bedrock-runtime.us-east-1.amazonaws.com"
    server.handler = lambda request: Reply.service_unavailable() if host(request) == home else None
    client = failover_client(server, fake_time, f"http://{home}", "us-west-2", proxy=True)
    response = converse(client, MODEL)
    moved = server.requests[-1]
    assert host(moved) == "bedrock-runtime.us-west-2.amazonaws.com"
    assert sigv4_scope(moved)["region"] == "us-west-2"
    assert response["BedrockHooks"]["served_by"] == {"model": MODEL, "region": "us-west-2"}


def test_an_unknown_region_is_skipped_and_a_pinned_one_still_used(server, fake_time):
    from bedrock_hooks.testing import BedrockServer

    with BedrockServer() as west:
        server.default = Reply.service_unavailable()
        client = failover_client(server, fake_time, server.url, f"eu-west-1,us-west-2={west.url}", proxy=False)
        response = converse(client, MODEL)
        assert len(west.requests) == 1 and sigv4_scope(west.requests[0])["region"] == "us-west-2"
        assert response["BedrockHooks"]["served_by"]["region"] == "us-west-2"


@pytest.mark.parametrize("url,expected", [
    ("https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse",
     "https://bedrock-runtime.us-west-2.amazonaws.com/model/m/converse"),
    ("https://bedrock-runtime-fips.us-east-1.amazonaws.com/model/m/converse",
     "https://bedrock-runtime-fips.us-west-2.amazonaws.com/model/m/converse"),
    ("https://bedrock-runtime.us-east-1.api.aws/model/m/converse",
     "https://bedrock-runtime.us-west-2.api.aws/model/m/converse"),
    ("https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com/model/m/converse", None),
    ("https://bedrock.internal.example.com/model/m/converse", None),
    ("http://127.0.0.1:8080/model/m/converse", None),
    ("https://bedrock-runtime.eu-west-1.amazonaws.com/model/m/converse", None),  # not the home Region
])
def test_regional_url(url, expected):
    assert fallbacks.regional_url(url, "us-east-1", "us-west-2", None) == expected


def test_regional_url_pinned():
    assert fallbacks.regional_url("https://vpce-1.example/model/m/converse?x=1", "us-east-1", "us-west-2",
                                  "http://127.0.0.1:9/") == "http://127.0.0.1:9/model/m/converse?x=1"
