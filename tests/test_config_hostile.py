"""Hostile configuration (issue 11, defects 10 and 11, and a sweep of config.py).

Whatever the environment or ``install()`` receives, loading the configuration never raises, never
hangs, never reads more than a small regular file, never logs the value of an unknown option, and
turns each unusable value into one warning that names the variable and the value used instead.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import bedrock_hooks
from bedrock_hooks import config
from bedrock_hooks.config import load_settings
from conftest import new_session

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzzSECRETzz"
JOIN_TIMEOUT = 20


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch, caplog):
    monkeypatch.setattr(config, "_warned", set())
    caplog.set_level(logging.DEBUG, logger="bedrock_hooks")


def messages(caplog, text: str = "") -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("bedrock_hooks") and text in r.getMessage()]


# -- defect 10: unknown install() keywords ------------------------------------------------------------

def test_unknown_install_keyword_is_named_but_its_value_never_logged(caplog):
    installation = bedrock_hooks.install(new_session(), aws_secret_access_key=SECRET)
    assert installation.active
    named = messages(caplog, "aws_secret_access_key")
    assert len(named) == 1 and "unknown option" in named[0]
    for record in caplog.records:
        assert SECRET not in record.getMessage() and SECRET not in repr(record.args)


def test_a_secret_option_never_shows_its_rejected_value(monkeypatch, caplog):
    """No option holds a secret today; one that does is marked ``secret`` and is never shown."""
    marked = tuple(dataclasses.replace(o, secret=True) if o.name == "max_attempts" else o for o in config.OPTIONS)
    monkeypatch.setattr(config, "OPTIONS", marked)
    settings = load_settings({"BEDROCK_HOOKS_MAX_ATTEMPTS": SECRET})
    assert settings.max_attempts == 5
    (warning,) = messages(caplog, "BEDROCK_HOOKS_MAX_ATTEMPTS")
    assert SECRET not in warning and "using 5" in warning
    assert all(SECRET not in raw for _, raw, _ in settings.rejected)


# -- defect 11: the fallbacks file --------------------------------------------------------------------

def bounded(call, unblock: str | None = None, what: str = "load_settings"):
    """``call()`` on a thread; if it hangs, open ``unblock`` (a FIFO) for writing to free it, then fail."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(JOIN_TIMEOUT)
    if thread.is_alive():
        if unblock:
            with open(unblock, "wb"):
                pass
        thread.join(JOIN_TIMEOUT)
        pytest.fail(f"{what} hung on the fallbacks file")
    return result[0]


def _load_in_thread(environ: dict[str, str], unblock: str | None = None, **overrides):
    return bounded(lambda: load_settings(environ, **overrides), unblock)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "chains.json"
    os.mkfifo(path)
    return str(path)


def test_fallbacks_fifo_does_not_hang(fifo, caplog):
    settings = _load_in_thread({"BEDROCK_HOOKS_FALLBACKS": fifo}, unblock=fifo)
    assert settings.fallbacks == ()
    (warning,) = messages(caplog, "BEDROCK_HOOKS_FALLBACKS")
    assert "not a regular file" in warning and "using (none)" in warning


def test_master_switch_off_reads_no_file_and_changes_no_logger(fifo, monkeypatch):
    monkeypatch.setenv("BEDROCK_HOOKS_ENABLED", "0")
    monkeypatch.setenv("BEDROCK_HOOKS_FALLBACKS", fifo)
    monkeypatch.setenv("BEDROCK_HOOKS_LOG_LEVEL", "DEBUG")
    package = logging.getLogger("bedrock_hooks")
    level, handlers = package.level, list(package.handlers)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(bedrock_hooks.install(new_session())), daemon=True)
    thread.start()
    thread.join(JOIN_TIMEOUT)
    if thread.is_alive():
        with open(fifo, "wb"):
            pass
        thread.join(JOIN_TIMEOUT)
        pytest.fail("install() with BEDROCK_HOOKS_ENABLED=0 opened the fallbacks file")
    assert result[0].kind == "disabled"
    assert package.level == level and package.handlers == handlers


def test_fallbacks_file_larger_than_the_limit_is_refused_with_one_warning(tmp_path, caplog):
    path = tmp_path / "big.json"
    with open(path, "wb") as handle:
        handle.truncate((1 << 20) + 1)  # 1 MiB + 1, sparse: no disk used
    settings = load_settings({"BEDROCK_HOOKS_FALLBACKS": str(path)})
    load_settings({"BEDROCK_HOOKS_FALLBACKS": str(path)})
    assert settings.fallbacks == ()
    (warning,) = messages(caplog, "BEDROCK_HOOKS_FALLBACKS")
    assert "larger than" in warning


def test_fallbacks_pointing_at_dev_zero_neither_hangs_nor_exhausts_memory(tmp_path):
    """Run in a child whose address space is capped, so the unfixed read fails fast instead of eating the host."""
    link = tmp_path / "zero.json"
    link.symlink_to("/dev/zero")
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from bedrock_hooks.config import load_settings
        settings = load_settings({{"BEDROCK_HOOKS_FALLBACKS": {str(link)!r}}})
        print("fallbacks", settings.fallbacks)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fallbacks ()" in proc.stdout
    assert "BEDROCK_HOOKS_FALLBACKS" in proc.stderr and "not a regular file" in proc.stderr


def test_fallbacks_regular_file_still_works(tmp_path):
    path = tmp_path / "chains.json"
    path.write_text('{"anthropic.claude-3-haiku-20240307-v1:0": ["amazon.nova-lite-v1:0"]}')
    settings = load_settings({"BEDROCK_HOOKS_FALLBACKS": str(path)})
    assert settings.fallbacks == (("anthropic.claude-3-haiku-20240307-v1:0", ("amazon.nova-lite-v1:0",)),)


# -- the sweep: numbers, text, types ----------------------------------------------------------------

@pytest.mark.parametrize("variable,raw,name,used", [
    ("BEDROCK_HOOKS_BACKOFF_BASE", "1e12", "backoff_base", 3600.0),
    ("BEDROCK_HOOKS_BACKOFF_CAP", "1e12", "backoff_cap", 3600.0),
    ("BEDROCK_HOOKS_THROTTLE_BACKOFF_BASE", "1e300", "throttle_backoff_base", 3600.0),
    ("BEDROCK_HOOKS_RETRY_DEADLINE", "1e13", "retry_deadline", 86400.0),
    ("BEDROCK_HOOKS_CIRCUIT_COOLDOWN", "1e20", "circuit_cooldown", 86400.0),
    ("BEDROCK_HOOKS_MAX_ATTEMPTS", "1" + "0" * 30, "max_attempts", 100),
    ("BEDROCK_HOOKS_KEEPALIVE_IDLE", "99999999", "keepalive_idle", 32767),
    ("BEDROCK_HOOKS_KEEPALIVE_COUNT", "1000", "keepalive_count", 127),
    ("BEDROCK_HOOKS_POOL_MAX_IDLE", "1e300", "pool_max_idle", 86400.0),
])
def test_huge_numbers_are_clamped_with_one_warning(variable, raw, name, used, caplog):
    settings = load_settings({variable: raw})
    load_settings({variable: raw})
    assert getattr(settings, name) == used
    (warning,) = messages(caplog, variable)
    assert raw[:20] in warning and f"using {used:g}" in warning
    assert settings.sources[name] == variable


@pytest.mark.parametrize("raw", [2.5, float("nan"), float("inf"), -3, True, "2.5", "½", "0x10"])
def test_unusable_attempt_counts_fall_back_to_the_default(raw, caplog):
    settings = load_settings({}, max_attempts=raw)
    assert settings.max_attempts == 5
    assert len(messages(caplog, "install(max_attempts=...)")) == 1


def test_huge_override_numbers_are_clamped(caplog):
    settings = load_settings({}, max_attempts=1e300, backoff_cap=10**30)
    assert settings.max_attempts == 100
    assert settings.backoff_cap == 3600.0


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    __repr__ = __str__

    def __int__(self) -> int:
        raise RuntimeError("no int either")


@pytest.mark.parametrize("name", ["max_attempts", "services", "fallbacks", "log_level", "fallback_regions", "retry"])
def test_an_override_that_cannot_even_be_printed_never_raises(name, caplog):
    settings = load_settings({}, **{name: _Unprintable()})
    assert getattr(settings, name) == config.OPTIONS_BY_NAME[name].default
    (warning,) = messages(caplog, f"install({name}=...)")
    assert "_Unprintable" in warning


def test_very_long_values_are_truncated_in_the_one_warning(caplog):
    raw = "9" * 5000 + "x" * 100_000
    settings = load_settings({"BEDROCK_HOOKS_MAX_ATTEMPTS": raw, "BEDROCK_HOOKS_LOG_LEVEL": raw})
    assert settings.max_attempts == 5 and settings.log_level == "WARNING"
    for variable in ("BEDROCK_HOOKS_MAX_ATTEMPTS", "BEDROCK_HOOKS_LOG_LEVEL"):
        (warning,) = messages(caplog, variable)
        assert len(warning) < 400 and "chars" in warning
    assert all(len(shown) < 200 for _, shown, _ in settings.rejected)


@pytest.mark.parametrize("variable", ["BEDROCK_HOOKS_SERVICES", "BEDROCK_HOOKS_FALLBACK_REGIONS", "BEDROCK_HOOKS_RETRY",
                                      "BEDROCK_HOOKS_FALLBACKS"])
def test_non_utf8_environment_values_warn_in_printable_text(variable, caplog):
    """POSIX hands undecodable bytes to Python as lone surrogates; a log line must still encode."""
    raw = os.fsdecode(b"bedrock-runtime,\xff\xfe") if variable != "BEDROCK_HOOKS_FALLBACKS" else os.fsdecode(b"m=\xff")
    load_settings({variable: raw})
    named = messages(caplog, variable)
    assert len(named) == 1
    named[0].encode("utf-8")  # no lone surrogate reaches a handler


@pytest.mark.parametrize("raw", ["us-wést-1", "us-west-2=ftp://example.com", "us-west-2=not a url",
                                 "us-west-2=http://", "x" * 500])
def test_fallback_regions_refuse_what_is_not_a_region_or_an_endpoint(raw, caplog):
    settings = load_settings({"BEDROCK_HOOKS_FALLBACK_REGIONS": raw})
    assert settings.fallback_regions == ()
    assert len(messages(caplog, "BEDROCK_HOOKS_FALLBACK_REGIONS")) == 1


def test_fallback_regions_with_pinned_endpoints_still_parse():
    settings = load_settings({"BEDROCK_HOOKS_FALLBACK_REGIONS": "us-west-2, eu-west-1=https://vpce-1.example.com:8443"})
    assert settings.fallback_regions == (("us-west-2", None), ("eu-west-1", "https://vpce-1.example.com:8443"))
