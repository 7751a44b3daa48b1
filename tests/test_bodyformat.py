"""Defect #8: an InvokeModel fallback only moves a body to a model that reads the same body format.

Against the loopback server with real clients: the chains below used to send a Titan Text body to
Titan Embeddings, a Nova Lite body to Nova Canvas and a Claude v2 text-completions prompt to Claude 3,
and the application got a 200 of the wrong shape. Now such an alternative is skipped (and the next
one of the same format is used), and a model the table does not know never crosses.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from bedrock_hooks.testing import Reply
from conftest import make_client, new_session
from _shared_state import fresh_shared_state  # noqa: F401  (autouse)

NOT_FOUND = Reply.error(404, "ResourceNotFoundException", "This model version has reached the end of its life.")



def invoke_with_chain(server, fake_time, requested: str, chain: list[str], body: dict):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(), fallbacks={requested: chain})
    client = make_client(session, server)
    server.handler = lambda request: NOT_FOUND if request.model_id == requested else None
    return client.invoke_model(modelId=requested, body=json.dumps(body))


@pytest.mark.parametrize("requested,wrong,right,body", [
    ("amazon.titan-text-express-v1", "amazon.titan-embed-text-v2:0", "amazon.titan-text-premier-v1:0",
     {"inputText": "hi"}),
    ("amazon.nova-lite-v1:0", "amazon.nova-canvas-v1:0", "amazon.nova-pro-v1:0",
     {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}),
    ("anthropic.claude-v2:1", "anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-instant-v1",
     {"prompt": "\n\nHuman: hi\n\nAssistant:", "max_tokens_to_sample": 10}),
], ids=["titan-text-not-to-titan-embed", "nova-lite-not-to-nova-canvas", "claude-v2-not-to-claude-3"])
def test_invoke_model_falls_back_only_within_one_body_format(server, fake_time, requested, wrong, right, body):
    response = invoke_with_chain(server, fake_time, requested, [wrong, right], body)
    assert [r.model_id for r in server.requests] == [requested, right]  # the other format was skipped
    assert json.loads(server.requests[-1].body) == body


def test_unknown_models_never_cross(server, fake_time):
    with pytest.raises(ClientError):
        invoke_with_chain(server, fake_time, "acme.mystery-model-v1:0", ["acme.mystery-model-v2:0"], {"x": 1})
    assert [r.model_id for r in server.requests] == ["acme.mystery-model-v1:0"]


def test_converse_is_model_agnostic_and_may_cross_formats(server, fake_time):
    session = new_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime(),
                          fallbacks={"anthropic.claude-v2:1": ["amazon.nova-lite-v1:0"]})
    client = make_client(session, server)
    server.handler = lambda request: NOT_FOUND if request.model_id == "anthropic.claude-v2:1" else None
    client.converse(modelId="anthropic.claude-v2:1", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert [r.model_id for r in server.requests] == ["anthropic.claude-v2:1", "amazon.nova-lite-v1:0"]


# -- the table itself ------------------------------------------------------------------------------

SAME = [
    ("anthropic.claude-3-5-sonnet-20240620-v1:0", "us.anthropic.claude-3-haiku-20240307-v1:0"),
    ("anthropic.claude-sonnet-4-20250514-v1:0", "anthropic.claude-3-7-sonnet-20250219-v1:0"),
    ("anthropic.claude-v2", "anthropic.claude-instant-v1"),
    ("amazon.titan-text-express-v1", "amazon.titan-text-lite-v1"),
    ("amazon.nova-micro-v1:0", "eu.amazon.nova-premier-v1:0"),
    ("amazon.titan-image-generator-v1", "amazon.titan-image-generator-v2:0"),
    ("meta.llama3-8b-instruct-v1:0", "meta.llama3-1-70b-instruct-v1:0"),
    ("mistral.mistral-7b-instruct-v0:2", "mistral.mixtral-8x7b-instruct-v0:1"),
    ("cohere.command-r-v1:0", "cohere.command-r-plus-v1:0"),
    ("ai21.jamba-1-5-mini-v1:0", "ai21.jamba-instruct-v1:0"),
    ("stability.sd3-large-v1:0", "stability.stable-image-ultra-v1:0"),
    ("amazon.titan-embed-text-v2:0", "us.amazon.titan-embed-text-v2:0"),  # the same embedding model
]
DIFFERENT = [
    ("anthropic.claude-v2:1", "anthropic.claude-3-haiku-20240307-v1:0"),
    ("amazon.titan-text-express-v1", "amazon.titan-embed-text-v1"),
    ("amazon.titan-text-express-v1", "amazon.titan-image-generator-v1"),
    ("amazon.nova-lite-v1:0", "amazon.nova-canvas-v1:0"),
    ("amazon.nova-pro-v1:0", "amazon.nova-reel-v1:0"),
    ("amazon.nova-lite-v1:0", "amazon.nova-sonic-v1:0"),
    ("amazon.titan-embed-text-v1", "amazon.titan-embed-text-v2:0"),  # other dimensions, other vector space
    ("cohere.embed-english-v3", "cohere.embed-multilingual-v3"),
    ("cohere.command-text-v14", "cohere.command-r-v1:0"),
    ("cohere.command-text-v14", "cohere.embed-english-v3"),
    ("mistral.mistral-large-2402-v1:0", "mistral.mistral-large-2407-v1:0"),
    ("ai21.j2-ultra-v1", "ai21.jamba-instruct-v1:0"),
    ("stability.stable-diffusion-xl-v1", "stability.sd3-large-v1:0"),
    ("meta.llama3-8b-instruct-v1:0", "mistral.mistral-7b-instruct-v0:2"),
    ("anthropic.claude-3-haiku-20240307-v1:0", "amazon.nova-pro-v1:0"),
    ("acme.model-v1", "acme.model-v1"),  # unknown: never, not even to itself
    ("arn:aws:bedrock:us-east-1:1:provisioned-model/x", "arn:aws:bedrock:us-east-1:1:provisioned-model/x"),
]


@pytest.mark.parametrize("model,alternative", SAME)
def test_same_body_format(model, alternative):
    from bedrock_hooks.bodyformats import same_body_format

    assert same_body_format(model, alternative) and same_body_format(alternative, model)


@pytest.mark.parametrize("model,alternative", DIFFERENT)
def test_different_body_format(model, alternative):
    from bedrock_hooks.bodyformats import same_body_format

    assert not same_body_format(model, alternative) and not same_body_format(alternative, model)


def test_the_table_is_data():
    from bedrock_hooks.bodyformats import BODY_FORMATS, body_format

    assert all(isinstance(pattern, str) and isinstance(fmt, str) for pattern, fmt in BODY_FORMATS)
    assert body_format("us.anthropic.claude-3-haiku-20240307-v1:0") == "anthropic-messages"
    assert body_format("anthropic.claude-v2:1") == "anthropic-text-completions"
    assert body_format("acme.model-v1") is None
