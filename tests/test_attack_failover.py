"""Region failover never leaves the AWS partition (issue 11, defect 9, one step further).

A Region is only "known" as a failover target where the home endpoint's partition has it: a GovCloud
or China application that lists ``us-west-2`` by mistake must not send its prompts (signed with
GovCloud or China credentials, which the commercial partition does not know) to the commercial
partition, nor to a host such as ``bedrock-runtime.us-west-2.amazonaws.com.cn`` that does not exist.
Within a partition failover works as before. Hosts are reached through a proxy on loopback (see
tests/test_fallbacks_regions.py).
"""

from __future__ import annotations

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks import fallbacks
from bedrock_hooks.testing import Reply, sigv4_scope
from conftest import CREDS, converse, new_session
from _shared_state import fresh_shared_state  # noqa: F401  (autouse)

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


def client_in(server, fake_time, home: str, host: str, regions: str):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), max_attempts=2, fallback_regions=regions)
    config = Config(retries={"mode": "standard"}, read_timeout=5, connect_timeout=2, proxies={"http": server.url})
    return session.client("bedrock-runtime", region_name=home, endpoint_url=f"http://{host}", config=config, **CREDS)


@pytest.mark.parametrize("home,host", [
    ("us-gov-west-1", "bedrock-runtime.us-gov-west-1.amazonaws.com"),
    ("cn-north-1", "bedrock-runtime.cn-north-1.amazonaws.com.cn"),
])
def test_failover_to_a_region_of_another_partition_is_skipped_with_a_note(home, host, server, fake_time):
    server.default = Reply.service_unavailable()
    client = client_in(server, fake_time, home, host, "us-west-2")
    with pytest.raises(ClientError) as raised:
        converse(client, MODEL)
    assert {r.headers["Host"] for r in server.requests} == {host}
    assert {sigv4_scope(r)["region"] for r in server.requests} == {home}
    info = raised.value.response["BedrockHooks"]
    assert "route" not in info
    assert any("failover to us-west-2 skipped" in note and "partition" in note for note in info["details"]["notes"])


def test_failover_within_govcloud_still_moves(server, fake_time):
    home = "bedrock-runtime.us-gov-west-1.amazonaws.com"
    server.handler = lambda request: Reply.service_unavailable() if request.headers.get("Host") == home else None
    client = client_in(server, fake_time, "us-gov-west-1", home, "us-west-2,us-gov-east-1")
    response = converse(client, MODEL)
    moved = server.requests[-1]
    assert moved.headers["Host"] == "bedrock-runtime.us-gov-east-1.amazonaws.com"
    assert sigv4_scope(moved)["region"] == "us-gov-east-1"
    assert response["BedrockHooks"]["served_by"]["region"] == "us-gov-east-1"


@pytest.mark.parametrize("url,home,region,expected", [
    ("https://bedrock-runtime.us-gov-west-1.amazonaws.com/model/m/converse", "us-gov-west-1", "us-west-2", None),
    ("https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse", "us-east-1", "us-gov-west-1", None),
    ("https://bedrock-runtime.cn-north-1.amazonaws.com.cn/model/m/converse", "cn-north-1", "us-west-2", None),
    ("https://bedrock-runtime.cn-north-1.amazonaws.com.cn/model/m/converse", "cn-north-1", "cn-northwest-1",
     "https://bedrock-runtime.cn-northwest-1.amazonaws.com.cn/model/m/converse"),
])
def test_regional_url_stays_in_the_partition(url, home, region, expected):
    assert fallbacks.regional_url(url, home, region, None) == expected
