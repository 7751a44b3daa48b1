"""Configuration: keyword overrides > ``BEDROCK_HOOKS_*`` environment variables > defaults.

The options are described once, as data (:data:`OPTIONS`), so the parser, the README table and
``bedrock-hooks doctor`` cannot drift apart. Parsing never raises into the host process: a value that
cannot be used produces exactly one warning per (variable, value) naming the variable, the rejected
value (quoted, escaped and truncated; never for an option marked ``secret``, never for an unknown
option) and the value used instead. Numbers have an upper bound too: a huge backoff or deadline is
clamped rather than handed to ``time.sleep``. With the master switch off nothing else is parsed, so
no file is read.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import process

logger = logging.getLogger("bedrock_hooks.config")

DEFAULT_SERVICES: tuple[str, ...] = ("bedrock", "bedrock-runtime")

_TRUE = frozenset({"1", "true", "yes", "on", "enable", "enabled"})
_FALSE = frozenset({"0", "false", "no", "off", "disable", "disabled", ""})
_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


class ConfigError(ValueError):
    """A single option value that cannot be used; never escapes :func:`load_settings`."""


class Clamped(ConfigError):
    """A value beyond the option's bound: :attr:`value` (the bound) is used, with one warning."""

    def __init__(self, value: Any, reason: str) -> None:
        super().__init__(reason)
        self.value = value


#: Upper bounds: beyond them a value is a typo or an attack, and ``time.sleep`` or ``2 ** n``
#: would overflow (issue 11, defect 12). Generous enough for any real deployment.
MAX_ATTEMPTS = 100
MAX_SECONDS_BACKOFF = 3600.0
MAX_SECONDS_WINDOW = 86400.0
MAX_CIRCUIT_THRESHOLD = 1_000_000
#: Linux's MAX_TCP_KEEPIDLE / MAX_TCP_KEEPINTVL / MAX_TCP_KEEPCNT: a larger value fails every connect().
MAX_KEEPALIVE_IDLE = 32767
MAX_KEEPALIVE_INTERVAL = 32767
MAX_KEEPALIVE_COUNT = 127
#: The fallbacks file is read only if it is a regular file no larger than this.
MAX_FILE_BYTES = 1 << 20
#: How much of a rejected value a warning or ``doctor`` shows.
PREVIEW_CHARS = 80


def parse_bool(raw: Any) -> bool:
    """Accept the spellings operators actually type into a pod spec (on/off, 1/0, true/false)."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError("expected on/off, true/false, yes/no or 1/0")


def _number(kind: Callable[[Any], Any], minimum: float, maximum: float, *, allow_zero: bool = False):
    """A parser for an int or float option in [minimum, maximum]; above the maximum it is clamped."""

    def parse(raw: Any):
        if isinstance(raw, bool):
            raise ConfigError("expected a number")
        try:
            value = kind(raw.strip()) if isinstance(raw, str) else kind(raw)
            whole = kind is not int or isinstance(raw, str) or value == raw
        except (TypeError, ValueError, OverflowError):
            raise ConfigError("expected a finite number" if kind is float else "expected a whole number") from None
        if not whole:
            raise ConfigError("expected a whole number")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError("expected a finite number")
        if value == 0 and allow_zero:
            return kind(0)
        if value < minimum:
            raise ConfigError(f"must be >= {minimum:g}")
        if value > maximum:
            raise Clamped(kind(maximum), f"above the maximum {maximum:g}")
        return value

    return parse


_seconds_or_zero = _number(float, 0.001, MAX_SECONDS_WINDOW, allow_zero=True)


def _seconds_or_off(raw: Any) -> float:
    """A duration in seconds where ``off``/``0`` disables the feature (returned as 0.0)."""
    if isinstance(raw, str) and raw.strip().lower() in _FALSE - {""}:
        return 0.0
    return float(_seconds_or_zero(raw))


def parse_services(raw: Any) -> tuple[str, ...]:
    """A comma/space separated list of botocore service names; unknown names are dropped with a warning."""
    names = raw.replace(",", " ").split() if isinstance(raw, str) else list(raw)
    cleaned = tuple(dict.fromkeys(str(n).strip().lower() for n in names if str(n).strip()))
    if not cleaned:
        raise ConfigError("expected at least one service name")
    known = _known_bedrock_services()
    unknown = [n for n in cleaned if known and n not in known]
    kept = tuple(n for n in cleaned if n not in unknown)
    if unknown and kept:
        _warn_once("BEDROCK_HOOKS_SERVICES", _raw_text(",".join(unknown)), ",".join(kept),
                   "unknown service name(s) ignored")
    if not kept:
        raise ConfigError("no known Bedrock service in it")
    return kept


def parse_log_level(raw: Any) -> str:
    text = str(raw).strip().upper()
    if text == "WARN":
        text = "WARNING"
    if text not in _LEVELS:
        raise ConfigError(f"expected one of {', '.join(_LEVELS)}")
    return text


def parse_fallbacks(raw: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Fallback chains: ``MODEL=ALT1,ALT2;MODEL2=ALT3``, inline JSON, a ``.json``/``.toml`` file, or a dict.

    Model IDs and ARNs contain ``:``, ``.`` and ``/`` but never ``=``, ``,`` or ``;``, so the compact
    form needs no quoting. An empty value means no fallbacks.
    """
    if isinstance(raw, Mapping):
        mapping: Mapping[str, Any] = raw
    else:
        text = str(raw).strip()
        if not text:
            return ()
        if text.startswith("{"):
            mapping = _json_object(text)
        elif text.lower().endswith((".json", ".toml")):
            mapping = _read_mapping_file(text)
        else:
            mapping = _compact_mapping(text)
    if not isinstance(mapping, Mapping):
        raise ConfigError("expected a table mapping model IDs to lists of alternatives")
    chains = []
    for model, alternatives in mapping.items():
        if not isinstance(alternatives, (str, list, tuple)) and alternatives is not None:
            raise ConfigError("expected a list of alternative model IDs for each model")
        alts = [alternatives] if isinstance(alternatives, str) else list(alternatives or ())
        cleaned = tuple(dict.fromkeys(str(a).strip() for a in alts if str(a).strip() and str(a).strip() != model))
        if not str(model).strip() or not cleaned:
            raise ConfigError(f"model {_preview(model)} needs at least one alternative")
        if not all(_is_text(name) for name in (str(model), *cleaned)):
            raise ConfigError("model IDs must be valid UTF-8 text")
        chains.append((str(model).strip(), cleaned))
    return tuple(chains)


def _is_text(name: str) -> bool:
    """False for undecodable bytes from the environment (lone surrogates): botocore cannot send them."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _compact_mapping(text: str) -> dict[str, list[str]]:
    mapping: dict[str, list[str]] = {}
    for part in text.replace("\n", ";").split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConfigError("expected MODEL=ALT1,ALT2;MODEL2=ALT3, JSON, or a .json/.toml file path")
        model, _, alts = part.partition("=")
        mapping[model.strip()] = [a for a in alts.split(",") if a.strip()]
    return mapping


def _json_object(text: str) -> Mapping[str, Any]:
    import json

    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"invalid JSON ({getattr(exc, 'msg', 'unreadable')})") from None
    except RecursionError:
        raise ConfigError("invalid JSON (nested too deeply)") from None
    if not isinstance(value, dict):
        raise ConfigError("expected a JSON object mapping model IDs to lists of alternatives")
    return value


def _read_mapping_file(path: str) -> Mapping[str, Any]:
    data = _read_small_regular_file(path)
    if path.lower().endswith(".json"):
        return _json_object(data.decode("utf-8", "replace"))
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise ConfigError("TOML needs Python 3.11+; use a .json file") from None
    try:
        value = tomllib.loads(data.decode("utf-8", "replace"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML ({exc})") from None
    return value.get("fallbacks", value)


def _read_small_regular_file(path: str) -> bytes:
    """At most :data:`MAX_FILE_BYTES` of a regular file. A FIFO would block ``open()`` forever and
    ``/dev/zero`` never ends, so the type is checked before opening (and again on the open file, in
    case the path was swapped), and the open itself cannot block (``O_NONBLOCK``)."""
    too_big = ConfigError(f"file larger than {MAX_FILE_BYTES / (1 << 20):g} MiB")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ConfigError("not a regular file")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError("not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise too_big
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_FILE_BYTES and (chunk := os.read(fd, MAX_FILE_BYTES + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError(f"cannot read file ({exc.strerror or type(exc).__name__})") from None
    if size > MAX_FILE_BYTES:  # it grew after fstat
        raise too_big
    return b"".join(chunks)


#: Units a quota may be given in: seconds per unit (the period a full bucket holds).
_QUOTA_PERIODS = {"min": 60.0, "m": 60.0, "minute": 60.0, "s": 1.0, "sec": 1.0, "second": 1.0}
MAX_QUOTA = 1e12  #: tokens per period: beyond any real quota


def parse_quotas(raw: Any) -> tuple[tuple[str, float, float], ...]:
    """Token quotas per model: ``PATTERN=N/min;PATTERN2=N/s`` (or a mapping), as (pattern, tokens/s, period s).

    Patterns are shell-style (``anthropic.claude-sonnet-4*``), matched case-insensitively on the model ID
    and on the foundation model of an inference profile. Entries that cannot be used are dropped with
    one warning naming them and the quotas kept; none usable is an error (no quotas are used).
    """
    if isinstance(raw, Mapping):
        items = [(str(k), v) for k, v in raw.items()]
    else:
        text = str(raw).strip()
        if not text:
            return ()
        items = [tuple(part.partition("=")[::2]) for part in text.replace(",", ";").split(";") if part.strip()]
    kept: list[tuple[str, float, float]] = []
    bad: list[str] = []
    for pattern, value in items:
        parsed = _quota(str(pattern).strip(), value)
        if parsed is None:
            bad.append(f"{str(pattern).strip()}={value}")
        else:
            kept.append(parsed)
    if not kept:
        raise ConfigError("expected PATTERN=N/min;PATTERN2=N/s (tokens per minute or per second)")
    if bad:
        _warn_once("BEDROCK_HOOKS_QUOTAS", _raw_text(";".join(bad)), _show_quotas(kept), "unusable quota entries ignored")
    return tuple(kept)


def _quota(pattern: str, value: Any) -> tuple[str, float, float] | None:
    number, _, unit = str(value).strip().partition("/")
    period = _QUOTA_PERIODS.get(unit.strip().lower() or "min")
    try:
        amount = float(number.strip().replace("_", ""))
    except ValueError:
        return None
    if not pattern or not _is_text(pattern) or period is None or not math.isfinite(amount) or amount <= 0:
        return None
    return pattern, min(amount, MAX_QUOTA) / period, period


def _show_quotas(quotas: list[tuple[str, float, float]]) -> str:
    return ";".join(f"{p}={rate * period:.15g}/{'min' if period == 60 else 's'}" for p, rate, period in quotas)


def parse_regions(raw: Any) -> tuple[tuple[str, str | None], ...]:
    """Failover regions, in order: ``us-west-2,eu-west-1``; ``REGION=ENDPOINT_URL`` pins an endpoint."""
    items = raw.replace(";", ",").split(",") if isinstance(raw, str) else list(raw)
    regions = []
    for item in items:
        region, _, endpoint = str(item).strip().partition("=")
        region = region.strip().lower()
        if not region:
            continue
        if not _is_region(region):
            raise ConfigError(f"{_preview(region)} is not a region name")
        endpoint = endpoint.strip()
        if endpoint and not _is_endpoint(endpoint):
            raise ConfigError(f"{_preview(endpoint)} is not an http(s):// endpoint URL")
        regions.append((region, endpoint or None))
    return tuple(regions)


def _is_region(name: str) -> bool:
    """``us-west-2``, ``us-gov-east-1``, ``eusc-de-east-1``: ASCII letters and digits joined by dashes."""
    parts = name.split("-")
    return len(name) <= 32 and len(parts) >= 2 and all(p.isascii() and p.isalnum() for p in parts)


def _is_endpoint(url: str) -> bool:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    return (scheme.lower() in ("http", "https") and bool(host) and len(url) <= 2048 and url.isascii()
            and url.isprintable() and " " not in url)


STATE_SCHEMES = ("memory", "redis", "rediss")
MAX_STATE_TIMEOUT = 1.0  #: seconds: a shared-state command must never hold a Bedrock call for longer


def parse_state_url(raw: Any) -> str:
    """``memory://`` (or empty) or ``redis[s]://[user:password@]host[:port][/db]``; a Redis URL needs redis-py.

    The reasons given never quote the URL (it may hold a password); the option is ``secret`` too.
    """
    from urllib.parse import urlsplit

    text = str(raw).strip()
    if not text:
        return "memory://"
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number in 0-65535)
    except ValueError:
        raise ConfigError("not a URL (an invalid port?)") from None
    scheme = parts.scheme.lower()
    if scheme not in STATE_SCHEMES or not text.lower().startswith(f"{scheme}://"):
        raise ConfigError("expected memory:// or redis://host:port/db (rediss:// for TLS)")
    if scheme == "memory":
        return "memory://"
    if not host:
        raise ConfigError(f"{scheme}:// needs a host")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigError("the database (the URL path) must be a number")
    import importlib.util

    if importlib.util.find_spec("redis") is None:
        raise ConfigError("a Redis URL needs redis-py: pip install 'bedrock-hooks[redis]'")
    return text


def parse_secret_text(raw: Any) -> str:
    """Any text (a salt): never shown."""
    return str(raw)


_known_cache: frozenset[str] | None = None


def _known_bedrock_services() -> frozenset[str]:
    """Bedrock service names this botocore knows; empty (accept anything) if botocore cannot tell."""
    global _known_cache
    if _known_cache is None:
        try:
            import botocore.loaders

            names = botocore.loaders.create_loader().list_available_services("service-2")
            _known_cache = frozenset(n for n in names if n.startswith("bedrock"))
        except Exception:  # botocore missing or unreadable data: validate nothing
            _known_cache = frozenset()
    return _known_cache


@dataclass(frozen=True)
class Option:
    """One setting: its field name, environment variable, parser, default and the sentence for docs."""

    name: str
    env: str
    parse: Callable[[Any], Any]
    default: Any
    doc: str
    #: True for an option that may hold a secret: its values are never shown (none does today).
    secret: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("enabled", "BEDROCK_HOOKS_ENABLED", parse_bool, True,
           "Master switch. Off: install() registers nothing and patches nothing."),
    Option("services", "BEDROCK_HOOKS_SERVICES", parse_services, DEFAULT_SERVICES,
           "Comma-separated botocore service names the hooks apply to."),
    Option("retry", "BEDROCK_HOOKS_RETRY", parse_bool, True,
           "Error-specific retry decisions. Off: botocore's own retry handler decides."),
    Option("max_attempts", "BEDROCK_HOOKS_MAX_ATTEMPTS", _number(int, 1, MAX_ATTEMPTS), 5,
           "Attempts per call, first included (at most 100). When unset, a client's own Config(retries=...) attempt "
           "count wins."),
    Option("backoff_base", "BEDROCK_HOOKS_BACKOFF_BASE", _number(float, 0.001, MAX_SECONDS_BACKOFF), 0.5,
           "Base of the exponential backoff for transient errors, seconds (full jitter)."),
    Option("throttle_backoff_base", "BEDROCK_HOOKS_THROTTLE_BACKOFF_BASE", _number(float, 0.001, MAX_SECONDS_BACKOFF),
           2.0,
           "Base of the exponential backoff for throttling, seconds: throttling backs off longer."),
    Option("backoff_cap", "BEDROCK_HOOKS_BACKOFF_CAP", _number(float, 0.001, MAX_SECONDS_BACKOFF), 20.0,
           "Upper bound of one backoff sleep, seconds (at most 3600)."),
    Option("retry_deadline", "BEDROCK_HOOKS_RETRY_DEADLINE", _number(float, 0.0, MAX_SECONDS_WINDOW, allow_zero=True),
           60.0,
           "Seconds a call may spend retrying, counted from its first failure (at most 86400); no sleep ends past it."),
    Option("fix_clock_skew", "BEDROCK_HOOKS_FIX_CLOCK_SKEW", parse_bool, True,
           "On a signature-expired error, measure skew from the Date header, correct signing, retry once."),
    Option("refresh_credentials", "BEDROCK_HOOKS_REFRESH_CREDENTIALS", parse_bool, True,
           "On an expired-token error, force a refresh of refreshable credentials and retry once."),
    Option("fallbacks", "BEDROCK_HOOKS_FALLBACKS", parse_fallbacks, (),
           "Fallback chains: MODEL=ALT1,ALT2;MODEL2=ALT3, inline JSON, or a .json/.toml file (regular, <= 1 MiB). "
           "Empty: none."),
    Option("fallback_cross_provider", "BEDROCK_HOOKS_FALLBACK_CROSS_PROVIDER", parse_bool, False,
           "Let InvokeModel fall back to a model of another or unknown body format. Converse always may."),
    Option("inference_profiles", "BEDROCK_HOOKS_INFERENCE_PROFILES", parse_bool, True,
           "On 'on-demand throughput isn't supported', retry once on the Region's cross-Region inference profile."),
    Option("circuit_threshold", "BEDROCK_HOOKS_CIRCUIT_THRESHOLD", _number(int, 1, MAX_CIRCUIT_THRESHOLD, allow_zero=True),
           5,
           "Throttling/unavailable errors on one model within the window that open its circuit; 0 disables."),
    Option("circuit_window", "BEDROCK_HOOKS_CIRCUIT_WINDOW", _number(float, 0.001, MAX_SECONDS_WINDOW), 60.0,
           "Seconds over which circuit-breaker errors are counted."),
    Option("circuit_cooldown", "BEDROCK_HOOKS_CIRCUIT_COOLDOWN", _number(float, 0.001, MAX_SECONDS_WINDOW), 30.0,
           "Seconds an open circuit sends new calls straight to the model's first fallback."),
    Option("fallback_regions", "BEDROCK_HOOKS_FALLBACK_REGIONS", parse_regions, (),
           "Opt-in Region failover for persistent 503s: us-west-2,eu-west-1 (REGION=URL pins an endpoint)."),
    Option("hints", "BEDROCK_HOOKS_HINTS", parse_bool, True,
           "Append a one-line hint to final errors and add response['BedrockHooks']. Off: messages untouched."),
    Option("log_level", "BEDROCK_HOOKS_LOG_LEVEL", parse_log_level, "WARNING",
           "Level of the 'bedrock_hooks' logger; while the app has configured no logging, its lines go to stderr."),
    Option("keepalive", "BEDROCK_HOOKS_KEEPALIVE", parse_bool, True,
           "Per-socket TCP keep-alive on Bedrock connections."),
    Option("keepalive_idle", "BEDROCK_HOOKS_KEEPALIVE_IDLE", _number(int, 1, MAX_KEEPALIVE_IDLE), 45,
           "Seconds of idleness before the first keep-alive probe (TCP_KEEPIDLE)."),
    Option("keepalive_interval", "BEDROCK_HOOKS_KEEPALIVE_INTERVAL", _number(int, 1, MAX_KEEPALIVE_INTERVAL), 15,
           "Seconds between keep-alive probes (TCP_KEEPINTVL)."),
    Option("keepalive_count", "BEDROCK_HOOKS_KEEPALIVE_COUNT", _number(int, 1, MAX_KEEPALIVE_COUNT), 4,
           "Unanswered probes before the kernel drops the connection (TCP_KEEPCNT)."),
    Option("pool_max_idle", "BEDROCK_HOOKS_POOL_MAX_IDLE", _seconds_or_off, 300.0,
           "A pooled connection idle longer than this is closed before reuse; 0/off disables eviction."),
    Option("stream_retry", "BEDROCK_HOOKS_STREAM_RETRY", parse_bool, True,
           "Transparently re-issue a stream that fails before any content was delivered (needs BEDROCK_HOOKS_RETRY on)."),
    Option("rate_limit", "BEDROCK_HOOKS_RATE_LIMIT", parse_bool, True,
           "Process-wide adaptive pacing per account, Region, model and endpoint, in tokens for model calls, engaged "
           "only when 429s are a large share of recent answers."),
    Option("state_url", "BEDROCK_HOOKS_STATE_URL", parse_state_url, "memory://",
           "Where pacing, circuit and inference-profile state lives: memory:// (this process) or "
           "redis://host:port/db, rediss:// (shared by every process using it; extra bedrock-hooks[redis]).",
           secret=True),
    Option("state_salt", "BEDROCK_HOOKS_STATE_SALT", parse_secret_text, "",
           "Secret mixed into the hashed Redis keys (same value on every process of a fleet); empty: the "
           "library's fixed salt.", secret=True),
    Option("state_timeout", "BEDROCK_HOOKS_STATE_TIMEOUT", _number(float, 0.001, MAX_STATE_TIMEOUT), 0.005,
           "Seconds a Redis command may take (connect included) before the call goes on with in-process "
           "state for 5 s (at most 1)."),
    Option("quotas", "BEDROCK_HOOKS_QUOTAS", parse_quotas, (),
           "Token quotas to pace to instead of learning them: PATTERN=N/min;PATTERN2=N/s, e.g. "
           "anthropic.claude-sonnet-4*=2000000/min (shell patterns on the model ID). Empty: learned from throttling."),
    Option("otel", "BEDROCK_HOOKS_OTEL", parse_bool, True,
           "OpenTelemetry metrics and span events, when opentelemetry-api is installed (docs/observability.md). "
           "Off: OpenTelemetry is never imported."),
)

OPTIONS_BY_NAME: Mapping[str, Option] = {o.name: o for o in OPTIONS}

#: Launcher-level variables: read by the zero-code bootstrap at interpreter start (before this module
#: can be imported), not by :func:`load_settings`. Listed here so every variable is documented in one place.
LAUNCHER_VARIABLES: Mapping[str, str] = {
    "BEDROCK_HOOKS_PROPAGATE": "Keep the bootstrap on PYTHONPATH for child processes (default off).",
    "BEDROCK_HOOKS_AUTOLOAD": "Activate the always-on .pth mode in this environment (default off).",
}


@dataclass(frozen=True)
class Settings:
    """The effective configuration: immutable, so handlers read it without locks."""

    enabled: bool = True
    services: tuple[str, ...] = DEFAULT_SERVICES
    retry: bool = True
    max_attempts: int = 5
    backoff_base: float = 0.5
    throttle_backoff_base: float = 2.0
    backoff_cap: float = 20.0
    retry_deadline: float = 60.0
    fix_clock_skew: bool = True
    refresh_credentials: bool = True
    fallbacks: tuple[tuple[str, tuple[str, ...]], ...] = ()
    fallback_cross_provider: bool = False
    inference_profiles: bool = True
    circuit_threshold: int = 5
    circuit_window: float = 60.0
    circuit_cooldown: float = 30.0
    fallback_regions: tuple[tuple[str, str | None], ...] = ()
    hints: bool = True
    log_level: str = "WARNING"
    keepalive: bool = True
    keepalive_idle: int = 45
    keepalive_interval: int = 15
    keepalive_count: int = 4
    pool_max_idle: float = 300.0
    stream_retry: bool = True
    rate_limit: bool = True
    state_url: str = "memory://"
    state_salt: str = field(default="", repr=False)
    state_timeout: float = 0.005
    quotas: tuple[tuple[str, float, float], ...] = ()
    otel: bool = True
    #: Where each value came from: ``default``, ``override`` or the environment variable name.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    #: ``(variable, rejected value as shown, value used)`` for every value that could not be used as given.
    rejected: tuple[tuple[str, str, str], ...] = field(default=(), compare=False, repr=False)

    def explicitly_set(self, name: str) -> bool:
        """True when ``name`` came from an override or the environment, not the default."""
        return self.sources.get(name, "default") != "default"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_warned: set[tuple[str, str]] = set()
_warned_lock = process.lock()


def _first_time(key: tuple[str, str]) -> bool:
    """True once per key per process: a crash-looping pod must not flood its logs."""
    with _warned_lock:
        if key in _warned:
            return False
        _warned.add(key)
        return True


def _warn_once(variable: str, value: str, used: str, reason: str) -> None:
    """One warning per (variable, value): the name, the rejected value (already made safe by
    :func:`_raw_text`), why, and the value used instead."""
    if _first_time((variable, value)):
        logger.warning("bedrock-hooks: ignoring %s=%r (%s); using %s", variable, value, reason, used)


def _raw_text(raw: Any, secret: bool = False) -> str:
    """A rejected value as text fit for a log line: truncated, never raising, hidden if secret."""
    if secret:
        return "<hidden>"
    if isinstance(raw, str):
        text = str.__str__(raw)  # a str subclass's own __str__/__repr__ could raise or lie
    else:
        try:
            text = repr(raw)
        except Exception:
            text = f"<unprintable {type(raw).__name__}>"
    if len(text) > PREVIEW_CHARS:
        text = f"{text[:PREVIEW_CHARS]}... ({len(text)} chars)"
    return text


def _preview(raw: Any) -> str:
    """:func:`_raw_text`, quoted and escaped, for messages that embed a value."""
    return repr(_raw_text(raw))


def _show(value: Any) -> str:
    """A value in use, for messages and ``doctor``: escaped so that any handler can encode it."""
    if value == ():
        return "(none)"
    if isinstance(value, tuple):
        text = ",".join(_show(v) if isinstance(v, tuple) else str(v) for v in value)
    else:
        text = str(value)
    if len(text) > PREVIEW_CHARS:
        text = f"{text[:PREVIEW_CHARS]}... ({len(text)} chars)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _resolve(option: Option, overrides: Mapping[str, Any], env: Mapping[str, str]) -> tuple[Any, str, list]:
    """(value, source, rejections) for one option: the first usable candidate (override, then the
    environment), else the default; every candidate that could not be used is warned about once."""
    value, source = option.default, "default"
    candidates = []
    if option.name in overrides:
        candidates.append((f"install({option.name}=...)", overrides[option.name], "override"))
    raw_env = env.get(option.env)
    if raw_env is not None:
        candidates.append((option.env, raw_env, option.env))
    failures: list[tuple[str, Any, str]] = []
    for label, raw, origin in candidates:
        try:
            value, source = option.parse(raw), origin
            break
        except Clamped as exc:
            value, source = exc.value, origin
            failures.append((label, raw, str(exc)))
            break
        except ConfigError as exc:
            failures.append((label, raw, str(exc)))
        except Exception as exc:  # a parser bug, or a value whose own methods raise, must not escape
            failures.append((label, raw, f"unparsable: {type(exc).__name__}"))
    used = "<hidden>" if option.secret and source != "default" else _show(value)
    rejected = []
    for label, raw, reason in failures:
        shown = _raw_text(raw, option.secret)
        rejected.append((label, shown, used))
        _warn_once(label, shown, used, reason)
    return value, source, rejected


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from overrides, then ``environ`` (default ``os.environ``), then defaults.

    Unknown override names are a programming error of the caller and are reported (once, by name:
    the value may be a secret passed to the wrong function) rather than raised, so a typo in
    ``install(max_attemps=3)`` cannot take a service down. With the master switch off nothing
    else is parsed: a switched-off library reads no file and warns about nothing.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    rejected: list[tuple[str, str, str]] = []
    for option in OPTIONS:  # "enabled" comes first
        value, source, rejections = _resolve(option, overrides, env)
        values[option.name], sources[option.name] = value, source
        rejected.extend(rejections)
        if option.name == "enabled" and value is False:
            return Settings(enabled=False, sources=sources, rejected=tuple(rejected))
    for name in overrides:
        if name not in OPTIONS_BY_NAME and _first_time(("install", name)):
            logger.warning("bedrock-hooks: ignoring unknown option install(%s=...); its value is not shown",
                           _raw_text(name))
    return Settings(**values, sources=sources, rejected=tuple(rejected))


def apply_log_level(settings: Settings) -> None:
    """Set the package logger's level, only when asked for, so the host's logging config stays in charge.

    Asking for a level also means seeing those messages: while the application has configured no
    logging, :class:`StderrFallback` prints them. Switched off, the library touches no logger.
    """
    if not settings.enabled or not settings.explicitly_set("log_level"):
        return
    package = logging.getLogger("bedrock_hooks")
    package.setLevel(settings.log_level)
    if not any(isinstance(h, StderrFallback) for h in package.handlers):
        package.addHandler(StderrFallback())


class StderrFallback(logging.Handler):
    """The library's records on stderr, one line each prefixed ``bedrock-hooks:``, while nobody else
    would show them.

    Python prints a record nobody handles through ``logging.lastResort``, but only at WARNING and
    above, so ``BEDROCK_HOOKS_LOG_LEVEL=INFO`` under ``bedrock-hooks run`` showed nothing. This
    handler decides at *emit* time, not at install: an application that configures logging later
    (``basicConfig`` after the first import, a framework's dictConfig) gets every record through
    its own handlers and none from here, so no line is ever printed twice.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if self._someone_else_handles(record):
            return
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message = f"{message} ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            if not message.startswith("bedrock-hooks:"):
                message = f"bedrock-hooks: {message}"
            stream = sys.stderr
            if stream is not None:
                stream.write(" ".join(message.splitlines()) + "\n")
                stream.flush()
        except Exception:
            self.handleError(record)

    def _someone_else_handles(self, record: logging.LogRecord) -> bool:
        """Whether a handler other than this one sits on the record's path to the root logger."""
        current: logging.Logger | None = logging.getLogger(record.name)
        while current is not None:
            if any(handler is not self for handler in current.handlers):
                return True
            current = current.parent if current.propagate else None  # type: ignore[assignment]
        return False
