"""Every catalog decision through REAL aiobotocore clients over loopback, as tests/test_catalog_wire.py
does for boto3: the same cases, the same attempts, sleeps on the injected async clock, the same hint
and ``BedrockHooks`` fields, in every retry mode. One catalog, one policy, two kinds of client."""

from __future__ import annotations

import asyncio

import pytest
from botocore.exceptions import ClientError

import bedrock_hooks
from _aio import aconverse, aio_botocore_time, aio_client, aiobotocore_session  # noqa: F401 (fixture)
from test_catalog_wire import CASES, Case, _id


async def _call(case: Case, mode: str, server, fake_time) -> tuple[dict | None, ClientError | None]:
    session = aiobotocore_session()
    bedrock_hooks.install(session, runtime=fake_time.runtime())
    async with aio_client(session, server, mode=mode) as client:
        server.script(case.reply)  # one fault, then the default OK reply
        try:
            return await aconverse(client), None
        except ClientError as error:
            return None, error


@pytest.mark.parametrize("mode", ["legacy", "standard", "adaptive"])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_entry_on_the_wire_through_aiobotocore(case: Case, mode: str, server, fake_time, recwarn):
    response, error = asyncio.run(_call(case, mode, server, fake_time))
    if case.succeeds:
        assert error is None, error
        assert response["ResponseMetadata"]["RetryAttempts"] == case.requests - 1
    else:
        assert error is not None
        info = error.response["BedrockHooks"]
        assert (info["entry"], info["decision"]) == (case.entry, case.decision)
        assert info["retryable"] == (case.decision != "fail")
        assert info["attempts"] == case.requests
        last_line = str(error).splitlines()[-1]
        assert last_line.startswith(f"[bedrock-hooks] {case.entry} ({case.decision})")
        assert info["solution"][0] in last_line
        if case.decision == "wait":
            assert info["retry_after"] == 900
    assert len(server.requests) == case.requests
    assert all(s >= 0 for s in fake_time.sleeps)
    assert not [w for w in recwarn if "never awaited" in str(w.message)]  # no coroutine left behind
