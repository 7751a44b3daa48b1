"""``bedrock-hooks doctor`` says where shared state lives and whether a Redis store answers (real redis-server)."""

from __future__ import annotations

from bedrock_hooks import doctor
from _redis import _redis_session, free_port, redis_server  # noqa: F401  (fixtures)
from _requires import require


def _row(environ: dict[str, str]) -> doctor.Check:
    (row,) = doctor.doctor(environ, timeout=0.5, sections=(doctor.check_state,))
    return row


def test_memory_is_named_as_in_process_state() -> None:
    row = _row({})
    assert (row.section, row.status) == ("shared state", "info") and row.detail.startswith("memory://")


def test_a_reachable_redis_is_ok_and_its_password_never_shown(redis_server) -> None:  # noqa: F811
    url = redis_server.url.replace("redis://", "redis://:s3cret-pass@")
    row = _row({"BEDROCK_HOOKS_STATE_URL": redis_server.url})
    assert row.status == "ok" and "answers (PING" in row.detail and f"127.0.0.1:{redis_server.port}/0" in row.detail
    refused = _row({"BEDROCK_HOOKS_STATE_URL": url})  # AUTH to a server without a password fails: still no secret
    assert "s3cret" not in refused.detail


def test_an_unreachable_redis_is_a_warning_saying_calls_fall_back() -> None:
    require("redis", group="redis")
    row = _row({"BEDROCK_HOOKS_STATE_URL": f"redis://:s3cret-pass@127.0.0.1:{free_port()}/0"})
    assert row.status == "warn" and "in-process state" in row.detail and "s3cret" not in row.detail
