"""A real ``redis-server`` for the tests of shared state: started on a free loopback port, stopped after.

Import the fixtures into a test module (``from _redis import redis_server  # noqa: F401``). Both the
Python client (group ``redis``: redis-py) and the server binary are requirements of group ``redis``:
missing, the tests skip locally and fail where ``.ci/run`` requires the group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from _requires import require, require_that

STARTUP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RedisServer:
    """One running ``redis-server`` process: its URL, and the switches tests use to make it fail."""

    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def stall(self) -> None:
        """SIGSTOP: the server accepts nothing and answers nothing, like a server stuck in a fork or swap."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_redis() -> RedisServer:
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                              else None)
    require_that(None if binary else "the redis-server binary is not installed", group="redis")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--protected-mode", "yes", "--loglevel", "warning"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(process, port)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return server
        except OSError:
            time.sleep(0.01)
        if process.poll() is not None:
            break
    server.stop()
    pytest.fail(f"redis-server did not start on port {port}")


@pytest.fixture(scope="session")
def _redis_session() -> Iterator[RedisServer]:
    require("redis", group="redis")
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture
def redis_server(_redis_session: RedisServer) -> Iterator[RedisServer]:
    """The session's server, emptied before and after each test."""
    _redis_session.resume()
    _redis_session.client().flushall()
    yield _redis_session
    _redis_session.resume()
    _redis_session.client().flushall()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of the test's own, for tests that stop or kill it."""
    require("redis", group="redis")
    server = start_redis()
    yield server
    server.stop()
