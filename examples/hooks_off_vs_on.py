"""Plain boto3 versus the same boto3 with bedrock-hooks, against a local Bedrock-shaped server.

Run:  python examples/hooks_off_vs_on.py

Nothing leaves this machine: the server is bedrock_hooks.testing.BedrockServer on 127.0.0.1, and the
credentials are fake. Each scenario scripts what "Bedrock" answers; the table shows how many
requests each client sent, how the call ended, and the whole error message (wrapped, never cut).
"""

from __future__ import annotations

import datetime
import os
import sys
import textwrap

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402

import bedrock_hooks  # noqa: E402
from bedrock_hooks.testing import BedrockServer, Reply  # noqa: E402

AHEAD = datetime.timedelta(minutes=10)


def clock_checking_handler(request):
    """Like Bedrock: reject a signature whose X-Amz-Date is more than 5 minutes from server time."""
    server_now = datetime.datetime.now(datetime.timezone.utc) + AHEAD
    signed = datetime.datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    if abs(server_now - signed.replace(tzinfo=datetime.timezone.utc)) > datetime.timedelta(minutes=5):
        return Reply.with_date(Reply.error(403, "InvalidSignatureException",
                                           f"Signature expired: {request.headers['X-Amz-Date']} is now earlier than "
                                           f"{server_now:%Y%m%dT%H%M%SZ} - 5 min."), server_now)
    return None


SCENARIOS = {
    "throttled twice, then OK": [Reply.throttling(), Reply.throttling()],
    "daily token quota exhausted": [Reply.throttling("Too many tokens per day, please wait before trying again.")] * 6,
    "503 then OK": [Reply.service_unavailable()],
    "model is end-of-life": [Reply.error(404, "ResourceNotFoundException",
                                         "This model version has reached the end of its life. Please refer to the "
                                         "AWS documentation for more details.")],
    "connection reset by a NAT gateway": [Reply.reset()],
    "local clock 10 minutes slow": clock_checking_handler,
    "use-case form not submitted": [Reply.error(404, "ResourceNotFoundException",
                                                "Model use case details have not been submitted for this account. "
                                                "Fill out the Anthropic use case details form before using the model.")],
}


def run(session: boto3.Session, server: BedrockServer, replies) -> tuple[int, str, str]:
    client = session.client("bedrock-runtime", endpoint_url=server.url,
                            config=Config(retries={"mode": "standard"}, read_timeout=5))
    server.reset()
    if callable(replies):
        server.handler = replies
    else:
        server.script(*replies)
    try:
        client.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                        messages=[{"role": "user", "content": [{"text": "hello"}]}])
        return len(server.requests), "ok", ""
    except (ClientError, BotoCoreError) as exc:
        return len(server.requests), type(exc).__name__, str(exc)


def wrapped(message: str, indent: str = " " * 6, width: int = 100) -> list[str]:
    """Every line of an error message, wrapped to ``width``: the hint line is the point, so none is cut."""
    return [part for line in message.splitlines()
            for part in textwrap.wrap(line, width, initial_indent=indent, subsequent_indent=indent + "  ")]


def main() -> None:
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    creds = {"region_name": "us-east-1", "aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "example"}
    with BedrockServer() as server:
        for name, replies in SCENARIOS.items():
            plain = run(boto3.Session(**creds), server, replies)
            hooked_session = boto3.Session(**creds)
            bedrock_hooks.install(hooked_session, backoff_base=0.05, throttle_backoff_base=0.1)
            hooked = run(hooked_session, server, replies)
            bedrock_hooks.uninstall(hooked_session)
            print(f"\n== {name}")
            for label, (requests, outcome, message) in (("plain boto3  ", plain), ("bedrock-hooks", hooked)):
                print(f"   {label}: {requests} request(s), {outcome}", *wrapped(message), sep="\n")


if __name__ == "__main__":
    main()
