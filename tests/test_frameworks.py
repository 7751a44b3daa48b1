"""Real framework clients carry the hooks after one ``bedrock_hooks.install()`` (issue 12, section 3).

langchain-aws, strands-agents and pydantic-ai each build their own ``boto3.Session`` and Bedrock
client. Each test builds the framework's Bedrock chat model pointed at the loopback server (its own
endpoint argument), makes one call through the framework while the server throttles twice, and
checks that the framework's client belongs to the process-wide installation and that *our* retry
decided (slept through the injected runtime; the framework itself never saw an error).

Group ``frameworks``: ``pip install langchain-aws strands-agents "pydantic-ai-slim[bedrock]"``.
"""

from __future__ import annotations

import pytest

import bedrock_hooks
from bedrock_hooks.testing import Reply
from test_install_everywhere import _credentials_from_the_environment  # noqa: F401 (autouse)
from tests._requires import require

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture
def everywhere(fake_time):
    return bedrock_hooks.install(runtime=fake_time.runtime())


def assert_hooked(client, everywhere) -> None:
    assert bedrock_hooks.installation_for(client) is everywhere
    ids = client.meta.events._emitter._unique_id_handlers
    assert f"bedrock-hooks-retry-{client.meta.service_model.service_id.hyphenize()}" in ids


def assert_our_retries(server, fake_time, operation: str) -> None:
    assert [r.operation for r in server.requests] == [operation] * 3
    assert len(fake_time.sleeps) == 2  # two throttles retried with our backoff, the third attempt answered


def test_langchain_aws_chat_bedrock_converse(server, fake_time, everywhere):
    chat_models = require("langchain_aws", group="frameworks")
    llm = chat_models.ChatBedrockConverse(model=MODEL, region_name="us-east-1", endpoint_url=server.url)
    assert_hooked(llm.client, everywhere)
    server.script(Reply.throttling(), Reply.throttling())
    answer = llm.invoke("hi")
    assert answer.content
    assert_our_retries(server, fake_time, "Converse")


def test_strands_agents_bedrock_model(server, fake_time, everywhere):
    require("strands", group="frameworks")
    from strands import Agent
    from strands.models import BedrockModel

    model = BedrockModel(model_id=MODEL, region_name="us-east-1", endpoint_url=server.url)
    assert_hooked(model.client, everywhere)
    server.script(Reply.throttling(), Reply.throttling())
    result = Agent(model=model, callback_handler=None)("hi")
    assert str(result).strip()
    assert_our_retries(server, fake_time, "ConverseStream")


def test_pydantic_ai_bedrock_converse_model(server, fake_time, everywhere):
    require("pydantic_ai", group="frameworks")
    from pydantic_ai import Agent
    from pydantic_ai.models.bedrock import BedrockConverseModel
    from pydantic_ai.providers.bedrock import BedrockProvider

    model = BedrockConverseModel(MODEL, provider=BedrockProvider(region_name="us-east-1", base_url=server.url))
    assert_hooked(model.client, everywhere)
    server.script(Reply.throttling(), Reply.throttling())
    result = Agent(model).run_sync("hi")
    assert result.output
    assert_our_retries(server, fake_time, "Converse")
