"""Configuration: keyword overrides > ``BEDROCK_HOOKS_*`` environment variables > defaults.

The options are described once, as data (:data:`OPTIONS`), so the parser, the README table and
``bedrock-hooks doctor`` cannot drift apart. Parsing never raises into the host process: a value that
cannot be parsed produces exactly one warning per (variable, value) naming the variable, the rejected
value and the value used instead.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("bedrock_hooks.config")

DEFAULT_SERVICES: tuple[str, ...] = ("bedrock", "bedrock-runtime")

_TRUE = frozenset({"1", "true", "yes", "on", "enable", "enabled"})
_FALSE = frozenset({"0", "false", "no", "off", "disable", "disabled", ""})
_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


class ConfigError(ValueError):
    """A single option value that cannot be used; never escapes :func:`load_settings`."""


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


def _number(kind: Callable[[Any], Any], minimum: float, *, allow_zero: bool = False):
    def parse(raw: Any):
        if isinstance(raw, bool):
            raise ConfigError("expected a number")
        try:
            value = kind(str(raw).strip()) if isinstance(raw, str) else kind(raw)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError("expected a number") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError("expected a finite number")
        if value == 0 and allow_zero:
            return value
        if value < minimum:
            raise ConfigError(f"must be >= {minimum}")
        return value

    return parse


def _seconds_or_off(raw: Any) -> float:
    """A duration in seconds where ``off``/``0`` disables the feature (returned as 0.0)."""
    if isinstance(raw, str) and raw.strip().lower() in _FALSE - {""}:
        return 0.0
    return float(_number(float, 0.001, allow_zero=True)(raw))


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
        _warn_once("BEDROCK_HOOKS_SERVICES", ",".join(unknown), ",".join(kept), "unknown service name(s) ignored")
    if not kept:
        raise ConfigError(f"no known Bedrock service in {','.join(cleaned)}")
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
    chains = []
    for model, alternatives in mapping.items():
        alts = [alternatives] if isinstance(alternatives, str) else list(alternatives or ())
        cleaned = tuple(dict.fromkeys(str(a).strip() for a in alts if str(a).strip() and str(a).strip() != model))
        if not str(model).strip() or not cleaned:
            raise ConfigError(f"model {model!r} needs at least one alternative")
        chains.append((str(model).strip(), cleaned))
    return tuple(chains)


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
        raise ConfigError(f"invalid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ConfigError("expected a JSON object mapping model IDs to lists of alternatives")
    return value


def _read_mapping_file(path: str) -> Mapping[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read file ({exc.strerror})") from None
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


def parse_regions(raw: Any) -> tuple[tuple[str, str | None], ...]:
    """Failover regions, in order: ``us-west-2,eu-west-1``; ``REGION=ENDPOINT_URL`` pins an endpoint."""
    items = raw.replace(";", ",").split(",") if isinstance(raw, str) else list(raw)
    regions = []
    for item in items:
        region, _, endpoint = str(item).strip().partition("=")
        region = region.strip().lower()
        if not region:
            continue
        if not all(part.isalnum() for part in region.split("-")):
            raise ConfigError(f"{region!r} is not a region name")
        regions.append((region, endpoint.strip() or None))
    return tuple(regions)


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


OPTIONS: tuple[Option, ...] = (
    Option("enabled", "BEDROCK_HOOKS_ENABLED", parse_bool, True,
           "Master switch. Off: install() registers nothing and patches nothing."),
    Option("services", "BEDROCK_HOOKS_SERVICES", parse_services, DEFAULT_SERVICES,
           "Comma-separated botocore service names the hooks apply to."),
    Option("retry", "BEDROCK_HOOKS_RETRY", parse_bool, True,
           "Error-specific retry decisions. Off: botocore's own retry handler decides."),
    Option("max_attempts", "BEDROCK_HOOKS_MAX_ATTEMPTS", _number(int, 1), 5,
           "Attempts per call, first included. When unset, a client's own Config(retries=...) attempt count wins."),
    Option("backoff_base", "BEDROCK_HOOKS_BACKOFF_BASE", _number(float, 0.001), 0.5,
           "Base of the exponential backoff for transient errors, seconds (full jitter)."),
    Option("throttle_backoff_base", "BEDROCK_HOOKS_THROTTLE_BACKOFF_BASE", _number(float, 0.001), 2.0,
           "Base of the exponential backoff for throttling, seconds: throttling backs off longer."),
    Option("backoff_cap", "BEDROCK_HOOKS_BACKOFF_CAP", _number(float, 0.001), 20.0,
           "Upper bound of one backoff sleep, seconds."),
    Option("retry_deadline", "BEDROCK_HOOKS_RETRY_DEADLINE", _number(float, 0.0, allow_zero=True), 60.0,
           "Seconds a call may spend retrying, counted from its first failure; no sleep ends past it."),
    Option("fix_clock_skew", "BEDROCK_HOOKS_FIX_CLOCK_SKEW", parse_bool, True,
           "On a signature-expired error, measure skew from the Date header, correct signing, retry once."),
    Option("refresh_credentials", "BEDROCK_HOOKS_REFRESH_CREDENTIALS", parse_bool, True,
           "On an expired-token error, force a refresh of refreshable credentials and retry once."),
    Option("fallbacks", "BEDROCK_HOOKS_FALLBACKS", parse_fallbacks, (),
           "Fallback chains: MODEL=ALT1,ALT2;MODEL2=ALT3, inline JSON, or a .json/.toml file. Empty: none."),
    Option("fallback_cross_provider", "BEDROCK_HOOKS_FALLBACK_CROSS_PROVIDER", parse_bool, False,
           "Let InvokeModel fall back to another provider family (its body format differs). Converse always may."),
    Option("inference_profiles", "BEDROCK_HOOKS_INFERENCE_PROFILES", parse_bool, True,
           "On 'on-demand throughput isn't supported', retry once on the Region's cross-Region inference profile."),
    Option("circuit_threshold", "BEDROCK_HOOKS_CIRCUIT_THRESHOLD", _number(int, 1, allow_zero=True), 5,
           "Throttling/unavailable errors on one model within the window that open its circuit; 0 disables."),
    Option("circuit_window", "BEDROCK_HOOKS_CIRCUIT_WINDOW", _number(float, 0.001), 60.0,
           "Seconds over which circuit-breaker errors are counted."),
    Option("circuit_cooldown", "BEDROCK_HOOKS_CIRCUIT_COOLDOWN", _number(float, 0.001), 30.0,
           "Seconds an open circuit sends new calls straight to the model's first fallback."),
    Option("fallback_regions", "BEDROCK_HOOKS_FALLBACK_REGIONS", parse_regions, (),
           "Opt-in Region failover for persistent 503s: us-west-2,eu-west-1 (REGION=URL pins an endpoint)."),
    Option("hints", "BEDROCK_HOOKS_HINTS", parse_bool, True,
           "Append a one-line hint to final errors and add response['BedrockHooks']. Off: messages untouched."),
    Option("log_level", "BEDROCK_HOOKS_LOG_LEVEL", parse_log_level, "WARNING",
           "Level of the 'bedrock_hooks' logger."),
    Option("keepalive", "BEDROCK_HOOKS_KEEPALIVE", parse_bool, True,
           "Per-socket TCP keep-alive on Bedrock connections."),
    Option("keepalive_idle", "BEDROCK_HOOKS_KEEPALIVE_IDLE", _number(int, 1), 45,
           "Seconds of idleness before the first keep-alive probe (TCP_KEEPIDLE)."),
    Option("keepalive_interval", "BEDROCK_HOOKS_KEEPALIVE_INTERVAL", _number(int, 1), 15,
           "Seconds between keep-alive probes (TCP_KEEPINTVL)."),
    Option("keepalive_count", "BEDROCK_HOOKS_KEEPALIVE_COUNT", _number(int, 1), 4,
           "Unanswered probes before the kernel drops the connection (TCP_KEEPCNT)."),
    Option("pool_max_idle", "BEDROCK_HOOKS_POOL_MAX_IDLE", _seconds_or_off, 300.0,
           "A pooled connection idle longer than this is closed before reuse; 0/off disables eviction."),
    Option("stream_retry", "BEDROCK_HOOKS_STREAM_RETRY", parse_bool, True,
           "Transparently re-issue a stream that fails before any content was delivered."),
    Option("rate_limit", "BEDROCK_HOOKS_RATE_LIMIT", parse_bool, True,
           "Process-wide adaptive pacing per service and Region, engaged only when several threads are throttled "
           "and 429s are a large share of recent answers."),
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
    #: Where each value came from: ``default``, ``override`` or the environment variable name.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    #: ``(variable, rejected value, value used)`` for every value that could not be used.
    rejected: tuple[tuple[str, str, str], ...] = field(default=(), compare=False, repr=False)

    def explicitly_set(self, name: str) -> bool:
        """True when ``name`` came from an override or the environment, not the default."""
        return self.sources.get(name, "default") != "default"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _warn_once(variable: str, value: str, used: str, reason: str) -> None:
    """One warning per (variable, value) per process: a crash-looping pod must not flood its logs."""
    key = (variable, value)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning("bedrock-hooks: ignoring %s=%r (%s); using %s", variable, value, reason, used)


def _show(value: Any) -> str:
    if value == ():
        return "(none)"
    if isinstance(value, tuple):
        return ",".join(_show(v) if isinstance(v, tuple) else str(v) for v in value)
    return str(value)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from overrides, then ``environ`` (default ``os.environ``), then defaults.

    Unknown override names are a programming error of the caller and are reported (once) rather than
    raised, so a typo in ``install(max_attemps=3)`` cannot take a service down.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    rejected: list[tuple[str, str, str]] = []
    for name in overrides:
        if name not in OPTIONS_BY_NAME:
            _warn_once(f"install({name}=...)", repr(overrides[name]), "nothing", "unknown option")
    for option in OPTIONS:
        value, source = option.default, "default"
        candidates = []
        if option.name in overrides:
            candidates.append((f"install({option.name}=...)", overrides[option.name], "override"))
        raw_env = env.get(option.env)
        if raw_env is not None:
            candidates.append((option.env, raw_env, option.env))
        failures: list[tuple[str, str, str]] = []
        for label, raw, origin in candidates:
            try:
                value, source = option.parse(raw), origin
                break
            except ConfigError as exc:
                failures.append((label, str(raw), str(exc)))
            except Exception as exc:  # a parser bug must not escape either
                failures.append((label, str(raw), f"unparsable: {type(exc).__name__}"))
        for label, raw, reason in failures:
            rejected.append((label, raw, _show(value)))
            _warn_once(label, raw, _show(value), reason)
        values[option.name] = value
        sources[option.name] = source
    return Settings(**values, sources=sources, rejected=tuple(rejected))


def apply_log_level(settings: Settings) -> None:
    """Set the package logger's level; only when asked for, so the host's logging config stays in charge."""
    if settings.explicitly_set("log_level"):
        logging.getLogger("bedrock_hooks").setLevel(settings.log_level)
