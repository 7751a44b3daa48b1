"""The Bedrock side of the NAT emulation: ``python natgw_server.py HOST PORT [PORT...]``.

Runs one :class:`bedrock_hooks.testing.BedrockServer` per port and echoes each request's
``connection_id`` in an ``x-bh-connection-id`` response header, so a client in another network
namespace can tell a reused connection from a new one. Prints ``{"ready": true, ...}`` once
listening and serves until killed.
"""

from __future__ import annotations

import json
import sys
import threading

from bedrock_hooks.testing import BedrockServer, RecordedRequest, Reply


def tag_connection(request: RecordedRequest) -> Reply:
    """Tagged with its connection; model id ``slow-S``: answered after S seconds (a request in flight idles)."""
    reply = Reply.ok(headers={"x-bh-connection-id": str(request.connection_id)})
    model = request.model_id or ""
    return Reply.delay(float(model[len("slow-"):]), then=reply) if model.startswith("slow-") else reply


def main(argv: list[str]) -> None:
    host, ports = argv[0], [int(p) for p in argv[1:]]
    servers = [BedrockServer(host, port, handler=tag_connection).start() for port in ports]
    print(json.dumps({"ready": True, "ports": [s.port for s in servers]}), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
