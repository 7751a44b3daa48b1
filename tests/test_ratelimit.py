"""The process-wide rate limiter (bedrock_hooks/ratelimit.py): pacing, adaptation, sharing, thread
safety and a clean detach. Time is injected: nothing here sleeps for real."""

from __future__ import annotations

import threading

import pytest

import bedrock_hooks
from bedrock_hooks import pacing, ratelimit
from bedrock_hooks.ratelimit import BETA, Bucket
from bedrock_hooks.testing import Reply

from _shared_state import throttle_from_two_threads
from conftest import converse, make_client, new_session


class Clock:
    """A thread-safe manual clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def _throttles_from_two_threads(bucket: Bucket, now: float) -> None:
    """Two throttled attempts answered on two live threads (thread ids are reused once a thread ends)."""
    done = threading.Event()
    first_answered = threading.Event()

    def first() -> None:
        bucket.before_send(now)
        bucket.on_response(now, throttled=True)
        first_answered.set()
        done.wait(5)

    t = threading.Thread(target=first)
    t.start()
    first_answered.wait(5)
    second = threading.Thread(target=lambda: (bucket.before_send(now), bucket.on_response(now, throttled=True)))
    second.start()
    second.join()
    done.set()
    t.join()


def _engage(bucket: Bucket, clock: Clock, sends: int = 20) -> None:
    """``sends`` requests in the last second, most answered with 429 (a quota storm), then throttles
    from two threads."""
    for i in range(sends):
        bucket.before_send(clock())
        bucket.on_response(clock(), throttled=i % 4 != 0)
        clock.advance(1.0 / sends)
    _throttles_from_two_threads(bucket, clock())


def test_idle_bucket_never_waits_and_only_counts():
    clock = Clock()
    bucket = Bucket(clock)
    for _ in range(100):
        assert bucket.before_send(clock()) == 0.0
        bucket.on_response(clock(), throttled=False)
        clock.advance(0.001)
    assert not bucket.engaged and bucket.measured_rate() > 0


def test_scattered_throttles_among_successes_do_not_engage():
    """A noisy fault mix (a few 429s among many successes, several threads) is left to backoff."""
    clock = Clock()
    bucket = Bucket(clock)
    for _ in range(40):  # 40 successes within the last second...
        bucket.before_send(clock())
        bucket.on_response(clock(), throttled=False)
        clock.advance(0.02)
    _throttles_from_two_threads(bucket, clock())  # ...then 2 throttles from two threads: 2/42 < 25 %
    assert not bucket.engaged
    for _ in range(10):  # a storm: most answers are 429 -> engages
        bucket.before_send(clock())
        bucket.on_response(clock(), throttled=True)
        clock.advance(0.02)
    _throttles_from_two_threads(bucket, clock())
    assert bucket.engaged


def test_a_bucket_born_on_a_throttle_does_not_judge_a_fraction_of_a_second():
    """A bucket is created by a 429, so the answers right after it are a small sample that starts with a
    throttle: in a noisy fault mix, 5 of 23 looked like a storm and paced the rest of the run."""
    clock = Clock()
    bucket = Bucket(clock)
    bucket.on_response(clock(), throttled=True)  # the throttle that created it
    for i in range(20):
        clock.advance(0.01)
        bucket.on_response(clock(), throttled=i % 6 == 0)
    _throttles_from_two_threads(bucket, clock())
    assert bucket.throttled_share(clock()) >= ratelimit.ENGAGE_SHARE and not bucket.engaged


def test_a_lone_thread_is_never_paced():
    """A sequential caller is already spaced by its backoff: its throttles do not engage pacing."""
    clock = Clock()
    bucket = Bucket(clock)
    for _ in range(10):
        assert bucket.before_send(clock()) == 0.0
        bucket.on_response(clock(), throttled=True)
        clock.advance(0.05)
    assert not bucket.engaged and bucket.throttles == 10


def test_a_storm_engages_the_bucket_at_beta_times_the_measured_rate():
    clock = Clock()
    bucket = Bucket(clock)
    _engage(bucket, clock, sends=20)
    state = bucket.state()
    assert bucket.engaged
    assert bucket.rate == pytest.approx(BETA * state["w_max"])
    assert 0.5 <= state["w_max"] <= 25  # at most the ~20 req/s sent over the last second, cut once per round trip


def test_pacing_spaces_sends_one_interval_apart_fifo():
    clock = Clock()
    bucket = Bucket(clock)
    _engage(bucket, clock)
    clock.advance(2.0)  # the level drains...
    bucket._state["tat"] = clock() + bucket.config.burst  # ...to exactly full
    interval = 1.0 / bucket.rate
    waits = [bucket.before_send(clock()) for _ in range(5)]
    assert waits == pytest.approx([0.0, interval, 2 * interval, 3 * interval, 4 * interval])


def test_wait_is_capped():
    clock = Clock()
    bucket = Bucket(clock)
    _engage(bucket, clock)
    waits = [bucket.before_send(clock(), max_wait=0.25) for _ in range(50)]
    assert max(waits) == 0.25


def test_throttling_cuts_once_per_round_trip_and_successes_grow_back():
    clock = Clock()
    bucket = Bucket(clock)
    _engage(bucket, clock)
    first, cuts = bucket.rate, bucket.reductions
    bucket.on_response(clock(), throttled=True, sent_at=bucket.state()["last_cut"] - 0.01)  # sent before the cut
    assert (bucket.rate, bucket.reductions) == (first, cuts)
    bucket.before_send(clock())  # reserved after the last cut...
    clock.advance(0.01)
    bucket.on_response(clock(), throttled=True)  # ...a fresh verdict, but within a window of the cut and with
    assert (bucket.rate, bucket.reductions) == (first, cuts)  # the rate under the delivered one: the past's 429
    clock.advance(bucket.config.window)
    for _ in range(int(ratelimit.MIN_SAMPLE)):  # a window later, still all 429s: verdicts on the new rate: cut
        bucket.before_send(clock())
        clock.advance(0.01)
        bucket.on_response(clock(), throttled=True)
    assert bucket.rate < first and bucket.reductions == cuts + 1
    cut = bucket.rate
    for _ in range(40):  # steady successes at the paced rate: CUBIC growth back above the cut
        clock.advance(max(bucket.before_send(clock()), 1.0 / bucket.rate))
        bucket.on_response(clock(), throttled=False)
    assert bucket.rate > cut
    delivered = pacing.delivered_rate(bucket.state(), clock(), bucket.config)  # the ceiling: what the server admitted
    assert bucket.rate <= ratelimit.MAX_RATE_FACTOR * max(delivered, ratelimit.MIN_RATE) + 1e-9


def test_rate_never_below_floor():
    clock = Clock()
    bucket = Bucket(clock)
    _engage(bucket, clock, sends=24)
    for _ in range(20):
        bucket.before_send(clock())
        clock.advance(0.001)
        bucket.on_response(clock(), throttled=True)
    assert bucket.rate >= ratelimit.MIN_RATE


def test_disengages_after_a_quiet_period():
    clock = Clock()
    bucket = Bucket(clock)
    _engage(bucket, clock)
    clock.advance(ratelimit.RESET_AFTER + 1)
    assert bucket.before_send(clock()) == 0.0
    assert not bucket.engaged
    assert [bucket.before_send(clock()) for _ in range(5)] == [0.0] * 5


def _in_threads(count: int, fn) -> None:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            fn(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_thread_safety_every_slot_handed_out_once():
    clock = Clock()
    bucket = Bucket(clock)
    _engage(bucket, clock)
    interval = 1.0 / bucket.rate
    waits: list[float] = []
    lock = threading.Lock()

    def reserve(_: int) -> None:
        mine = [bucket.before_send(clock()) for _ in range(50)]
        with lock:
            waits.extend(mine)

    _in_threads(8, reserve)
    slots = sorted(round(w / interval) for w in waits)
    assert slots == list(range(slots[0], slots[0] + 400))  # 400 distinct, consecutive slots: none lost or double-booked


def test_thread_safety_under_mixed_traffic():
    clock = Clock()
    bucket = Bucket(clock)
    _engage(bucket, clock)

    def traffic(i: int) -> None:
        for n in range(300):
            bucket.before_send(clock(), max_wait=1.0)
            clock.advance(0.0005)
            bucket.on_response(clock(), throttled=(n + i) % 7 == 0)

    _in_threads(8, traffic)
    assert bucket.engaged and bucket.throttles >= 8 * 300 // 7
    assert ratelimit.MIN_RATE <= bucket.rate < float("inf")
    assert bucket.before_send(clock()) >= 0.0


# -- the feature on real clients ------------------------------------------------------------------

def _throttle_once(client) -> None:
    try:
        converse(client)
    except Exception:
        pass


def test_clients_of_one_scope_share_a_bucket_created_by_throttling(server, fake_time):
    """Buckets exist only for scopes that were throttled; clients of one account, Region and model share
    one; another Region gets its own; the last uninstall forgets them all."""
    session = new_session()
    a, b = make_client(session, server), make_client(session, server)
    other = new_session().client("bedrock-runtime", region_name="eu-west-1", endpoint_url=server.url)
    runtime = fake_time.runtime()
    for client in (a, b, other):
        bedrock_hooks.install(client, runtime=runtime, rate_limit=True, max_attempts=1)
    converse(a)
    assert ratelimit.buckets() == {}  # successes create nothing
    server.default = Reply.throttling()
    for client in (a, b, other):
        _throttle_once(client)
    scopes = [scope for scope, _clock in ratelimit.buckets()]
    assert sorted(scope.region for scope in scopes) == ["eu-west-1", "us-east-1"]
    (east,) = [bucket for (scope, _), bucket in ratelimit.buckets().items() if scope.region == "us-east-1"]
    assert east.throttles == 2  # a and b: one bucket
    for client in (a, b, other):
        bedrock_hooks.uninstall(client)
    assert ratelimit.buckets() == {}


def test_throttled_clients_are_paced_together_and_uninstall_restores_plain(server, fake_time):
    """Two clients throttled on two threads engage one bucket; both then wait their slot (fake sleeps);
    after uninstall the same calls sleep nothing."""
    before = set(ratelimit.buckets())
    session = new_session()
    clients = [make_client(session, server), make_client(session, server)]
    runtime = fake_time.runtime()
    for client in clients:
        bedrock_hooks.install(client, runtime=runtime, max_attempts=1, rate_limit=True)
    server.default = Reply.throttling()

    def call(client) -> None:
        try:
            converse(client)
        except Exception:
            pass

    throttle_from_two_threads(clients, fake_time, call)
    (bucket,) = [b for k, b in ratelimit.buckets().items() if k not in before]
    assert bucket.engaged and bucket.throttles == 22
    server.default = Reply.ok()
    fake_time.sleeps.clear()
    for client in clients * 3:
        converse(client)
    assert len(fake_time.sleeps) >= 5 and all(s > 0 for s in fake_time.sleeps)  # paced, shared schedule
    for client in clients:
        bedrock_hooks.uninstall(client)
    assert set(ratelimit.buckets()) == before
    fake_time.sleeps.clear()
    for client in clients * 3:
        converse(client)
    assert fake_time.sleeps == []
    assert not any("ratelimit" in str(h) for c in clients for h in c.meta.events._emitter._unique_id_handlers)


def test_rate_limit_off_attaches_nothing(server, fake_time, monkeypatch):
    monkeypatch.setenv("BEDROCK_HOOKS_RATE_LIMIT", "off")
    before = set(ratelimit.buckets())
    client = make_client(new_session(), server)
    bedrock_hooks.install(client, runtime=fake_time.runtime())
    assert set(ratelimit.buckets()) == before
    converse(client)


def test_only_throttling_counts():
    assert ratelimit.is_throttling(429, {"Error": {"Code": "ThrottlingException", "Message": "Too many requests"}})
    assert not ratelimit.is_throttling(429, {"Error": {"Code": "ThrottlingException",
                                                       "Message": "Too many tokens per day, please wait"}})
    assert not ratelimit.is_throttling(503, {"Error": {"Code": "ServiceUnavailableException", "Message": "x"}})
    assert not ratelimit.is_throttling(200, {})


def test_a_quiet_bucket_is_forgotten_without_uninstall(server, fake_time):
    """No client pins a bucket: RESET_AFTER seconds without throttling and the registry is empty again,
    so the success path is back to its idle cost."""
    client = make_client(new_session(), server)
    bedrock_hooks.install(client, runtime=fake_time.runtime(), max_attempts=1)
    server.default = Reply.throttling()
    _throttle_once(client)
    assert len(ratelimit.buckets()) == 1
    server.default = Reply.ok()
    fake_time.now += ratelimit.RESET_AFTER / 2
    converse(client)
    assert len(ratelimit.buckets()) == 1  # throttled recently: successes are metered
    fake_time.now += ratelimit.RESET_AFTER + 1
    converse(client)
    assert ratelimit.buckets() == {}


def test_on_by_default_but_idle_until_a_storm(server, fake_time):
    client = make_client(new_session(), server)
    bedrock_hooks.install(client, runtime=fake_time.runtime())
    assert any("ratelimit" in h for h in client.meta.events._emitter._unique_id_handlers)
    for _ in range(5):
        converse(client)
    assert ratelimit.buckets() == {} and fake_time.sleeps == []
