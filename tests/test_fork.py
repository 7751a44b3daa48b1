"""Fork safety (issue 11, defect 2): a child forked while another thread holds one of the package's
locks must not deadlock -- gunicorn ``--preload``, Celery prefork and ``multiprocessing`` (fork).

Every child is real (``os.fork`` / a ``multiprocessing`` fork pool), installs, creates a Bedrock
client and calls the loopback server (served by the parent's server thread), then exits. The
parent waits for each child with a deadline and kills it past that: a kill is a deadlock. POSIX only
(the project's supported platforms): where ``os.fork`` is missing these tests fail, they never skip.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import bedrock_hooks
from bedrock_hooks import installation, ratelimit
from bedrock_hooks.features import Runtime
from bedrock_hooks.testing import Reply
from conftest import CREDS, make_client, new_session

CHILD_DEADLINE = 20.0  # seconds a child may take before it counts as deadlocked
FORKS = 20
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]
NO_SLEEP = Runtime(sleep=lambda seconds: None, rng=random.Random(3))


_warm: dict[str, object] = {}


def warm_session():
    """One boto3 Session whose loader already holds the bedrock-runtime model: a child's client is cheap."""
    if "session" not in _warm:
        import boto3

        session = boto3.Session(region_name="us-east-1", **CREDS)
        session.client("bedrock-runtime", endpoint_url="http://127.0.0.1:9")  # loads and caches the model
        _warm["session"] = session
    return _warm["session"]


def child_work(url: str) -> int:
    """What a forked worker does first: install, create a client, call, uninstall."""
    from botocore.config import Config

    session = warm_session()
    hooks = bedrock_hooks.install(session, runtime=NO_SLEEP)
    client = session.client("bedrock-runtime", endpoint_url=url, config=Config(retries={"mode": "standard"}))
    client.converse(modelId=MODEL, messages=MESSAGES)
    hooks.uninstall()
    return os.getpid()


def fork_and_wait(url: str) -> str:
    """Fork one child running :func:`child_work`; ``ok``, ``failed`` or ``deadlock``."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            child_work(url)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + CHILD_DEADLINE
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "ok" if os.waitstatus_to_exitcode(status) == 0 else "failed"
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "deadlock"


def held_during(lock, forked: threading.Event) -> threading.Thread:
    """A thread that holds ``lock`` until the fork happened (at most 0.2 s)."""
    taken = threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            forked.wait(0.2)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(5)
    return thread


def _bucket_lock(server, keep: list) -> object:
    session = new_session()
    bedrock_hooks.install(session, runtime=NO_SLEEP)
    client = make_client(session, server)
    server.script(Reply.throttling())  # a bucket exists once its scope was throttled
    client.converse(modelId=MODEL, messages=MESSAGES)
    keep.append(client)
    buckets = list(ratelimit.buckets().values())
    assert buckets, "the rate limiter attached no bucket"
    return buckets[0]._lock


LOCKS: dict[str, Callable[..., object]] = {
    "installation": lambda server, keep: installation._lock,
    "rate-limiter registry": lambda server, keep: ratelimit._registry_lock,
    "rate-limiter bucket": _bucket_lock,
}


@pytest.mark.parametrize("name", list(LOCKS))
def test_child_forked_while_another_thread_holds_a_lock_does_not_deadlock(name, server):
    warm_session()
    keep: list = []
    lock = LOCKS[name](server, keep)
    outcomes = []
    for _ in range(3):
        forked = threading.Event()
        holder = held_during(lock, forked)
        outcomes.append(fork_and_wait(server.url))
        forked.set()
        holder.join(5)
    assert outcomes == ["ok"] * 3, outcomes


@pytest.fixture
def busy_process(server) -> Iterator[list[str]]:
    """Threads that install, uninstall and call (through the limiter) for as long as the test runs."""
    warm_session()
    rng = random.Random(9)
    server.handler = lambda request: Reply.throttling() if rng.random() < 0.2 else None
    stop = threading.Event()
    problems: list[str] = []
    session = new_session()

    def toggler() -> None:
        while not stop.is_set():
            hooks = bedrock_hooks.install(session, runtime=NO_SLEEP)
            make_client(session, server)
            hooks.uninstall()

    def caller() -> None:
        client = make_client(session, server)
        bedrock_hooks.install(client, runtime=NO_SLEEP)
        while not stop.is_set():
            try:
                client.converse(modelId=MODEL, messages=MESSAGES)
            except Exception as exc:  # noqa: BLE001 - throttling may exhaust attempts
                if "Throttling" not in str(exc):
                    problems.append(repr(exc))

    threads = [threading.Thread(target=toggler, daemon=True)]
    threads += [threading.Thread(target=caller, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    yield problems
    stop.set()
    for thread in threads:
        thread.join(30)
    server.handler = None
    assert not any(t.is_alive() for t in threads)
    assert not problems, problems[:3]


def test_forks_while_other_threads_install_uninstall_and_call_never_deadlock(server, busy_process):
    outcomes = [fork_and_wait(server.url) for _ in range(FORKS)]
    assert outcomes.count("deadlock") == 0 and outcomes.count("failed") == 0, \
        f"{outcomes.count('deadlock')} deadlocks, {outcomes.count('failed')} failures of {FORKS} children"


def test_multiprocessing_fork_pool_while_other_threads_work(server, busy_process):
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        pids = pool.map_async(child_work, [server.url] * 6).get(timeout=60)
    assert len(pids) == 6 and os.getpid() not in pids


def test_a_stuck_thread_delays_a_fork_boundedly_and_never_blocks_it(server, monkeypatch):
    from bedrock_hooks import process

    monkeypatch.setattr(process, "FORK_WAIT", 0.05)
    stuck = process.rlock(consistent=True)
    never = threading.Event()
    holder = threading.Thread(target=lambda: stuck.acquire() and never.wait(30), daemon=True)
    holder.start()
    assert fork_and_wait(server.url) == "ok"  # the fork went ahead without the lock...
    pid = os.fork()
    if pid == 0:
        os._exit(0 if stuck.acquire(timeout=5) else 1)  # ...and the child's copy is free
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    never.set()
    holder.join(5)


def test_every_lock_of_the_package_is_fork_safe():
    """One mechanism: a lock made any other way would be inherited held by a forked child."""
    import pathlib
    import re

    package = pathlib.Path(bedrock_hooks.__file__).parent
    exempt = ("process.py", "testing.py", "testing")  # the mechanism itself; the test server (not library code)
    offenders = [f"{path.name}:{n}" for path in package.rglob("*.py") if path.relative_to(package).parts[0] not in exempt
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"threading\.(R?Lock|Condition|Semaphore|BoundedSemaphore)\(", line)]
    assert offenders == [], f"use bedrock_hooks.process.lock()/rlock() instead: {offenders}"
