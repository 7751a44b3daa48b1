"""Check a recorded request's SigV4 signature the way the real service would.

Why a module of its own: it is the only part of the test kit that needs
botocore (imported lazily, inside the functions), and tests of Region failover
use it to prove a re-targeted request was signed for where it went.
"""

from __future__ import annotations

import hmac
import re
from typing import Optional

from .wire import RecordedRequest

def sigv4_scope(request: RecordedRequest) -> dict[str, str]:
    """The credential scope a request was signed for: ``access_key``, ``date``, ``region``, ``service``."""
    authorization = request.headers.get("Authorization", "")
    match = re.search(r"Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request", authorization)
    if not match:
        return {}
    return dict(zip(("access_key", "date", "region", "service"), match.groups()))


def verify_sigv4(request: RecordedRequest, secret_key: str, *, region: str, service: str = "bedrock",
                 session_token: Optional[str] = None) -> bool:
    """Recompute a recorded request's SigV4 signature with botocore's own signer and compare.

    Lets a test prove that a request re-targeted at another Region (or model) was signed correctly
    for where it went, the way the real service would check it.
    """
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    authorization = request.headers.get("Authorization", "")
    signed = re.search(r"SignedHeaders=([^,\s]+)", authorization)
    signature = re.search(r"Signature=([0-9a-f]+)", authorization)
    scope = sigv4_scope(request)
    if not (signed and signature and scope) or scope["region"] != region or scope["service"] != service:
        return False
    names = signed.group(1).split(";")
    headers = {name: request.headers.get(name, "") for name in names}
    aws_request = AWSRequest(method=request.method, url=f"http://{headers.get('host', 'localhost')}{request.path}",
                             headers=headers, data=request.body)
    aws_request.context["timestamp"] = request.headers.get("X-Amz-Date", "")
    auth = SigV4Auth(Credentials(scope["access_key"], secret_key, session_token), service, region)
    canonical = auth.canonical_request(aws_request)
    expected = auth.signature(auth.string_to_sign(aws_request, canonical), aws_request)
    return hmac.compare_digest(expected, signature.group(1))
