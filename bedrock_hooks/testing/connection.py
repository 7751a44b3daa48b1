"""One TCP connection of the test server: read a request, perform its reply.

Why a module of its own: this is the only place that writes bytes to a socket,
including the faults (RST, FIN, truncated bodies, stalls mid-stream), so the
scripting API in :mod:`.server` never has to think about framing.
"""

from __future__ import annotations

import http
import http.server
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from .replies import Reply, default_body, default_stream
from .wire import (
    EVENTSTREAM_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    STREAMING_OPERATIONS,
    Headers,
    RecordedRequest,
    detect_operation,
    http_date,
)

if TYPE_CHECKING:
    from .quota import Reservation
    from .server import BedrockServer

class _ConnectionAborted(Exception):
    """Internal: the connection is gone (reset by us, or server stopping)."""


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # flush stream frames immediately
    server: LoopbackHTTPServer

    def setup(self) -> None:
        super().setup()
        # Every blocking read/write on an accepted connection has a deadline,
        # so an idle or stuck client can never pin a thread forever.
        self.connection.settimeout(self.server.owner.connection_timeout)
        self.connection_id = self.server.owner._register_connection(self.connection)
        self.request_index = 0

    # Route every method through one dispatcher.
    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence per-request logging; tests assert on ``server.requests``."""

    # -- request side ------------------------------------------------------ #

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise _ConnectionAborted()
                try:
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                except ValueError:
                    raise _ConnectionAborted() from None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # discard trailers
                    return b"".join(parts)
                chunk = self.rfile.read(size)
                self.rfile.readline(65537)
                if len(chunk) < size:
                    raise _ConnectionAborted()
                parts.append(chunk)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _ConnectionAborted() from None
        if length <= 0:
            return b""
        body = self.rfile.read(length)
        if len(body) < length:
            raise _ConnectionAborted()
        return body

    def _dispatch(self) -> None:
        owner = self.server.owner
        try:
            body = self._read_body()
            operation, model_id = detect_operation(self.command, self.path)
            request = RecordedRequest(
                method=self.command,
                path=self.path,
                headers=Headers(self.headers.items()),
                body=body,
                operation=operation,
                model_id=model_id,
                connection_id=self.connection_id,
                client_port=int(self.client_address[1]),
                time=time.monotonic(),
                connection_request_index=self.request_index,
            )
            self.request_index += 1
            owner._record(request)
            reply, usage = owner._admit(request, owner._choose_reply(request))
            self._unsettled = usage
            try:
                self._perform(reply, request, usage)
            finally:
                self._settle(completed=False)  # abandoned before its last bytes: input only
        except (_ConnectionAborted, OSError):
            # Client went away, server stopping, or garbage framing: drop the
            # connection quietly; the client sees whatever it sees.  Anything
            # else is a bug and reaches handle_error() -> server.errors.
            self.close_connection = True

    # -- response side ----------------------------------------------------- #

    _unsettled: Optional[Reservation] = None

    def _settle(self, completed: bool = True) -> None:
        """Settle the request's quota reservation, once.  Called just *before* the last bytes of a
        generated answer are written, so a client that has its answer always sees it settled."""
        usage, self._unsettled = self._unsettled, None
        if usage is not None:
            self.server.owner._settle(usage, completed)

    def _perform(self, reply: Reply, request: RecordedRequest, usage: Reservation | None = None) -> None:
        kind = reply.kind
        if kind == "delay":
            if self.server.owner._stopping.wait(reply.seconds):
                raise _ConnectionAborted()
            assert reply.then is not None
            self._perform(reply.then, request, usage)
        elif kind == "reset":
            self._reset_connection()
        elif kind == "close":
            self.close_connection = True  # finish() + shutdown_request() send FIN
        elif kind == "truncated":
            assert reply.then is not None
            status, headers, body = self._render(reply.then, request)
            # Headers promise the full body (no "Connection: close": a dying
            # server would not announce it), then the connection just ends.
            self._write_head(status, headers, body[: reply.keep_bytes])
            self.close_connection = True
        elif kind == "stream" or (
            kind == "ok" and reply.body is None and request.operation in STREAMING_OPERATIONS
        ):
            self._send_stream(reply, request, usage)
        else:
            status, headers, body = self._render(reply, request, usage)
            self._settle()
            self._write_head(status, headers, b"" if self.command == "HEAD" else body)

    def _base_headers(self, reply: Reply, *, request_id: bool) -> list[tuple[str, str]]:
        date = reply.date or http_date(time.time() + self.server.owner.clock_skew)
        headers = [("Date", date)]
        if request_id:
            headers.append(("x-amzn-RequestId", str(uuid.uuid4())))
        return headers

    def _render(
        self, reply: Reply, request: RecordedRequest, usage: Reservation | None = None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        extra: dict[str, str] = {}
        if reply.body is None:
            body, extra = default_body(request, usage)
        else:
            body = reply.body
        headers = self._base_headers(reply, request_id=reply.kind != "raw")
        if reply.kind != "raw":
            headers.append(("Content-Type", JSON_CONTENT_TYPE))
        headers.append(("Content-Length", str(len(body))))
        headers.extend(extra.items())
        return reply.status, _apply_overrides(headers, reply.headers), body

    def _write_head(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        if self.close_connection and not any(k.lower() == "connection" for k, _ in headers):
            headers = headers + [("Connection", "close")]
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        self.wfile.write(head.encode("latin-1") + body)

    def _send_stream(self, reply: Reply, request: RecordedRequest, usage: Reservation | None = None) -> None:
        frames = reply.frames if reply.kind == "stream" else default_stream(request, usage)
        headers = self._base_headers(reply, request_id=True)
        headers.append(("Content-Type", EVENTSTREAM_CONTENT_TYPE))
        if request.operation == "InvokeModelWithResponseStream":
            headers.append(("X-Amzn-Bedrock-Content-Type", JSON_CONTENT_TYPE))
        if reply.chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            self.close_connection = True
        headers = _apply_overrides(headers, reply.headers)
        self._write_head(reply.status, headers)
        stopping = self.server.owner._stopping
        for index, frame in enumerate(frames):
            if index and reply.delay_between and stopping.wait(reply.delay_between):
                raise _ConnectionAborted()
            if frame.action == "reset":
                self._reset_connection()
                return
            if frame.action == "stall":
                if stopping.wait(frame.seconds):
                    raise _ConnectionAborted()
                continue
            data = frame.encode()
            if not data:
                continue
            if index == len(frames) - 1:
                self._settle()
            if reply.chunked:
                data = f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n"
            self.wfile.write(data)
        if reply.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _reset_connection(self) -> None:
        """Send RST now: linger-0 then drop every reference to the fd."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # rfile (a makefile) holds a reference to the fd, which is only really
        # closed -- and the RST only sent -- once every reference is gone.
        # wfile is left open: BaseHTTPRequestHandler flushes it after every
        # request and an unbuffered writer owns no fd reference.
        try:
            self.rfile.close()
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass


def _apply_overrides(
    headers: list[tuple[str, str]], overrides: Iterable[tuple[str, Optional[str]]]
) -> list[tuple[str, str]]:
    result = list(headers)
    for name, value in overrides:
        result = [(k, v) for k, v in result if k.lower() != name.lower()]
        if value is not None:
            result.append((name, value))
    return result


class LoopbackHTTPServer(http.server.ThreadingHTTPServer):
    """The listening socket of one :class:`BedrockServer`: a thread per connection, tracked by its owner
    so that ``stop()`` can abort connections and join threads with a deadline."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # we join handler threads ourselves, with a timeout
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: BedrockServer) -> None:
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls socket.getfqdn(), which can block for
        # seconds on hosts with slow reverse DNS.  We never need the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._process_request_thread,
            args=(request, client_address),
            name=f"BedrockServer-conn-{client_address[1] if len(client_address) > 1 else '?'}",
            daemon=True,
        )
        self.owner._track_thread(thread, request)
        thread.start()

    def _process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self.owner._untrack_thread(threading.current_thread(), request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Record unexpected handler errors instead of printing tracebacks."""
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, OSError):
            self.owner._record_error(exc)
