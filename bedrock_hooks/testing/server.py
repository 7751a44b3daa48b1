"""The loopback Bedrock server: lifecycle, scripting and observation.

Why a module of its own: this is the API a test talks to (start/stop, script
replies, read recorded requests, make a client); the per-connection byte work
is in :mod:`.connection`.
"""

from __future__ import annotations

import collections
import itertools
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .connection import LoopbackHTTPServer
from .quota import OutputTokens, QuotaBook, QuotaRule, QuotaStats, Reservation
from .replies import Handler, Reply
from .wire import RecordedRequest

_BOTO3_LOCK = threading.Lock()
_BOTO3_SESSION: Any = None


def _shared_boto3_session() -> Any:
    global _BOTO3_SESSION
    with _BOTO3_LOCK:
        if _BOTO3_SESSION is None:
            import boto3.session  # type: ignore[import-untyped,unused-ignore]  # lazy: stdlib-only server

            _BOTO3_SESSION = boto3.session.Session()
        return _BOTO3_SESSION



class BedrockServer:
    """A Bedrock-compatible HTTP/1.1 server on a background thread.

    Use as a context manager or via :meth:`start` / :meth:`stop`.  Each
    accepted TCP connection gets its own daemon thread, a socket timeout
    (``connection_timeout``) and a ``connection_id``; persistent connections
    are supported exactly as botocore's urllib3 pool expects.  :meth:`stop`
    shuts down every open connection, interrupts delays and stalls, and joins
    threads with a deadline, so a misbehaving test cannot hang the suite.

    Attributes that tests may set at any time:

    * ``default`` – reply used when no handler/script reply applies.
    * ``handler`` – optional ``callable(RecordedRequest) -> Reply | None``
      consulted first.  Calls are serialized under the server lock, so
      stateful handlers (token buckets, counters) need no locking of their
      own; do not sleep in it, return :meth:`Reply.delay` instead.
    * ``clock_skew`` – seconds added to the server clock for ``Date`` headers.

    :meth:`quota` gives models Bedrock's tokens-per-minute quota (:mod:`.quota`); ``quota_clock``
    is the clock its buckets refill on (inject a fake one to test without sleeping).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        connection_timeout: float = 30.0,
        default: Reply | None = None,
        handler: Handler | None = None,
        quota_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.connection_timeout = connection_timeout
        self.default: Reply = default if default is not None else Reply.ok()
        self.handler: Handler | None = handler
        self.clock_skew: float = 0.0

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._script: collections.deque[Reply] = collections.deque()
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._connection_ids = itertools.count(1)
        self._connections = 0
        self._open_sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._httpd: LoopbackHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._stopped = False
        self._quotas = QuotaBook(quota_clock)

    # -- lifecycle --------------------------------------------------------- #

    def start(self) -> BedrockServer:
        """Bind and start serving in a daemon thread; returns ``self``."""
        with self._lock:
            if self._httpd is not None or self._stopped:
                raise RuntimeError("BedrockServer can only be started once")
            self._httpd = LoopbackHTTPServer((self.host, self._requested_port), self)
            self._serve_thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"BedrockServer-{self.port}",
                daemon=True,
            )
            self._serve_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, abort open connections and join threads.

        Idempotent.  Waits at most about ``timeout`` seconds in total; any
        thread still alive after that is a daemon and will not block exit.
        """
        with self._lock:
            if self._httpd is None or self._stopped:
                self._stopped = True
                return
            self._stopped = True
            httpd, serve_thread = self._httpd, self._serve_thread
        deadline = time.monotonic() + timeout
        self._stopping.set()  # wakes delays and stalls
        if serve_thread is not None and serve_thread.is_alive():
            httpd.shutdown()
            serve_thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            sockets = list(self._open_sockets)
            threads = list(self._threads)
        for sock in sockets:  # unblock handler threads waiting in recv/send
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            httpd.server_close()
        except OSError:
            pass
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> BedrockServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._httpd is not None and not self._stopped

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to pass as ``endpoint_url``, e.g. ``http://127.0.0.1:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- scripting --------------------------------------------------------- #

    def script(self, *replies: Reply) -> None:
        """Append replies to the FIFO queue; each request consumes one."""
        for reply in replies:
            if not isinstance(reply, Reply):
                raise TypeError(f"script() takes Reply objects, got {type(reply).__name__}")
        with self._lock:
            self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not yet consumed (assert 0 to prove all were used)."""
        with self._lock:
            return len(self._script)

    def quota(
        self,
        model: str,
        tokens_per_minute: float,
        *,
        burst: float | None = None,
        burndown: float | None = None,
        max_output: int | None = None,
        output_tokens: OutputTokens | None = None,
    ) -> None:
        """Enforce Bedrock's token quota on ``model`` (a model ID, or an ``fnmatch`` pattern such as
        ``"*claude-sonnet-4*"``: each matching model ID gets a bucket of its own, as on Bedrock).

        Each generated answer reserves ``input + max_tokens`` at its start (a 429
        ThrottlingException "Too many tokens" when the bucket does not hold it) and settles at its
        end to ``input + cache writes + output x burndown``.  ``burst`` is the bucket's capacity
        (default ``tokens_per_minute``); ``burndown`` and ``max_output`` (what an unset max_tokens
        reserves) default to the model's row of ``quota.MODEL_LIMITS``; ``output_tokens`` (a number
        or ``callable(RecordedRequest) -> int``) is the answer's length, default the 7 tokens of
        ``DEFAULT_TEXT``.  Models without a quota are unlimited; a later call for the same model
        replaces its rule and restarts its bucket.  See :mod:`.quota` for how tokens are counted.
        """
        self._quotas.add(QuotaRule(model, tokens_per_minute, burst, burndown, max_output, output_tokens))

    def quota_stats(self) -> dict[str, QuotaStats]:
        """Counters per model ID that drew on a quota: admitted, throttled, reserved, settled,
        in flight, input/output/cache tokens, and the tokens available now."""
        return self._quotas.stats()

    def reset(self) -> None:
        """Forget scripted replies, recorded requests, errors and quotas; restore
        ``default`` to ``Reply.ok()``, ``handler`` to ``None`` and
        ``clock_skew`` to 0.  Open connections and the connection counter are
        left alone (they describe the live transport, not the test scenario)."""
        self._quotas.clear()
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self._errors.clear()
            self.default = Reply.ok()
            self.handler = None
            self.clock_skew = 0.0

    # -- observation ------------------------------------------------------- #

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot (a new list) of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """Number of TCP connections accepted so far."""
        with self._lock:
            return self._connections

    @property
    def open_connections(self) -> int:
        """Number of TCP connections currently open."""
        with self._lock:
            return len(self._open_sockets)

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by ``handler`` (each was answered with a 500)."""
        with self._lock:
            return list(self._errors)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests arrived; raise ``TimeoutError``
        otherwise.  For tests whose client runs in another thread."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"got {len(self._requests)} of {count} requests")
                self._changed.wait(remaining)
            return list(self._requests)

    def client(
        self,
        service_name: str = "bedrock-runtime",
        *,
        region_name: str = "us-east-1",
        config: Any = None,
        **kwargs: Any,
    ) -> Any:
        """A real boto3 client aimed at this server with dummy credentials.

        Clients come from one module-wide ``boto3.session.Session`` so service
        models are parsed once (a fresh session costs ~0.2 s per client, which
        dominates a test suite).  Credentials, region and ``endpoint_url`` are
        passed explicitly, so no profile or environment setting can redirect
        the client.  ``kwargs`` go to ``Session.client``.
        """
        session = _shared_boto3_session()
        with _BOTO3_LOCK:  # boto3 sessions are not thread-safe for client creation
            return session.client(
                service_name,
                region_name=region_name,
                endpoint_url=self.url,
                aws_access_key_id="AKIDEXAMPLE",
                aws_secret_access_key="secret",
                config=config,
                **kwargs,
            )

    # -- internals used by the handler ------------------------------------ #

    def _register_connection(self, sock: socket.socket) -> int:
        with self._lock:
            self._connections += 1
            return next(self._connection_ids)

    def _track_thread(self, thread: threading.Thread, sock: socket.socket) -> None:
        with self._lock:
            self._threads.add(thread)
            self._open_sockets.add(sock)

    def _untrack_thread(self, thread: threading.Thread, sock: socket.socket) -> None:
        with self._lock:
            self._threads.discard(thread)
            self._open_sockets.discard(sock)

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def _admit(self, request: RecordedRequest, reply: Reply) -> tuple[Reply, Reservation | None]:
        """Apply the model's quota to a generated answer: reserve, or answer 429 at once."""
        terminal = reply
        while terminal.kind == "delay" and terminal.then is not None:
            terminal = terminal.then
        if not self._quotas or terminal.kind != "ok" or terminal.body is not None or terminal.status >= 300:
            return reply, None
        try:
            admitted = self._quotas.admit(request)
        except Exception as exc:  # e.g. a test's output_tokens function raised: surface it like a handler's
            self._record_error(exc)
            return Reply.error(500, "InternalServerException", f"test quota raised {exc!r}"), None
        if isinstance(admitted, Reply):
            return admitted, None
        return reply, admitted

    def _settle(self, reservation: Reservation, completed: bool) -> None:
        self._quotas.settle(reservation, completed)

    def _choose_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            handler = self.handler
            if handler is not None:
                try:
                    reply = handler(request)
                except Exception as exc:  # surface, don't kill the connection thread
                    self._errors.append(exc)
                    return Reply.error(500, "InternalServerException", f"test handler raised {exc!r}")
                if reply is not None:
                    if not isinstance(reply, Reply):
                        self._errors.append(TypeError(f"handler returned {type(reply).__name__}"))
                        return Reply.error(500, "InternalServerException", "test handler returned a non-Reply")
                    return reply
            if self._script:
                return self._script.popleft()
            return self.default
