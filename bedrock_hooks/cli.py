"""The ``bedrock-hooks`` command: zero-code launcher, host diagnosis and the error catalog.

* ``bedrock-hooks run -- python app.py`` (also ``bedrock-hooks-run``): start a command with the
  bootstrap ``sitecustomize`` on ``PYTHONPATH``, so an application nobody may edit gets the hooks,
  like ``opentelemetry-instrument`` and ``ddtrace-run``.
* ``bedrock-hooks doctor``: check this host against the advice the library is built from (SDK
  versions, keep-alive, configuration, credentials source, clock).
* ``bedrock-hooks explain CODE_OR_MESSAGE`` and ``bedrock-hooks catalog``: the catalog as a user
  sees it, from the same :data:`bedrock_hooks.catalog.ENTRIES` the handlers use.
* ``bedrock-hooks enable-pth`` / ``disable-pth`` / ``bootstrap-path``: the opt-in always-on mode.

Nothing here runs inside the application: the launcher ``exec``\\ s the command, so the CLI's own
imports cost the application nothing after the start.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import platform
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import ENTRIES, OPTIONS, Decision, Entry, ErrorFacts, __version__, autoload, classify, load_settings

from .config import LAUNCHER_VARIABLES  # noqa: E402  (documented with the other variables)

#: Minimum versions: pyproject's floor. Bedrock's Converse API is checked in the model itself.
MIN_VERSIONS = {"botocore": (1, 34, 116), "boto3": (1, 34, 116), "wrapt": (1, 14, 0)}  # = pyproject.toml
#: NAT gateways, interface VPC endpoints and NLBs drop TCP flows idle this long, silently (seed).
NAT_IDLE_TIMEOUT = 350
#: SigV4 rejects requests signed this far from AWS time (RequestExpired / signature expired).
SIGV4_TOLERANCE = 300


def bootstrap_dir() -> Path:
    """The directory holding the bootstrap ``sitecustomize.py`` (package data)."""
    return Path(__file__).resolve().parent / "bootstrap"


# -- run -----------------------------------------------------------------------------------------

def launch_environment(environ: Mapping[str, str], *, propagate: bool = False) -> dict[str, str]:
    """The environment for the launched command: the bootstrap first on ``PYTHONPATH``, once.

    An entry already naming the bootstrap (nested launchers, ``--propagate``) is dropped before the
    directory is prepended again, so it never appears twice.
    """
    env = dict(environ)
    here = os.path.normcase(str(bootstrap_dir()))
    existing = [e for e in env.get("PYTHONPATH", "").split(os.pathsep) if e]
    kept = [e for e in existing if os.path.normcase(os.path.realpath(e)) != here]
    env["PYTHONPATH"] = os.pathsep.join([str(bootstrap_dir()), *kept])
    if propagate:
        env["BEDROCK_HOOKS_PROPAGATE"] = "1"
    return env


def run_command(command: Sequence[str], *, propagate: bool = False) -> int:
    """Replace this process with ``command`` under the bootstrap (a child process on Windows)."""
    command = list(command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("bedrock-hooks run: no command given (usage: bedrock-hooks run -- python app.py)", file=sys.stderr)
        return 2
    env = launch_environment(os.environ, propagate=propagate)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if os.name == "nt":  # no real exec on Windows: run it and pass the exit status on
            import subprocess

            return subprocess.call(command, env=env)
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        print(f"bedrock-hooks run: command not found: {command[0]}", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"bedrock-hooks run: permission denied: {command[0]}", file=sys.stderr)
        return 126
    except OSError as exc:
        print(f"bedrock-hooks run: cannot execute {command[0]}: {exc}", file=sys.stderr)
        return 126
    return 0  # pragma: no cover - execvpe does not return


# -- doctor --------------------------------------------------------------------------------------

@dataclass
class Check:
    """One line of the doctor report."""

    section: str
    name: str
    status: str  #: "ok", "warn", "fail" or "info"
    detail: str


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


def _installed_version(dist: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(dist)
        except PackageNotFoundError:
            pass
    except Exception:
        pass
    try:
        module = __import__(dist)
        return str(getattr(module, "__version__", None) or "") or None
    except Exception:
        return None


def check_versions() -> list[Check]:
    checks = [Check("versions", "python", "ok" if sys.version_info >= (3, 10) else "fail",
                    f"{platform.python_version()} ({sys.executable})"),
              Check("versions", "bedrock-hooks", "info", f"{__version__} ({Path(__file__).resolve().parent})")]
    for dist, minimum in MIN_VERSIONS.items():
        found = _installed_version(dist)
        floor = ".".join(map(str, minimum))
        if found is None:
            checks.append(Check("versions", dist, "fail", f"not installed (bedrock-hooks needs >= {floor})"))
        elif _version_tuple(found) < minimum:
            checks.append(Check("versions", dist, "fail", f"{found} is older than {floor}: upgrade "
                                f"(pip install -U {dist}); older SDKs lack Bedrock operations and fixes"))
        else:
            checks.append(Check("versions", dist, "ok", f"{found} (>= {floor})"))
    checks.extend(_check_botocore_capabilities())
    return checks


def _check_botocore_capabilities() -> list[Check]:
    """Ask the installed botocore what it can do instead of trusting version arithmetic."""
    checks = []
    try:
        import botocore.loaders

        operations = botocore.loaders.create_loader().load_service_model("bedrock-runtime", "service-2")["operations"]
        wanted = ("Converse", "ConverseStream", "InvokeModelWithResponseStream")
        missing = [op for op in wanted if op not in operations]
        if missing:
            checks.append(Check("versions", "bedrock-runtime model", "warn",
                                f"this botocore lacks {', '.join(missing)}: upgrade boto3/botocore"))
        else:
            checks.append(Check("versions", "bedrock-runtime model", "ok",
                                f"{len(operations)} operations, including {', '.join(wanted)}"))
    except Exception as exc:
        checks.append(Check("versions", "bedrock-runtime model", "fail",
                            f"cannot load it ({type(exc).__name__}: {exc}): botocore too old or broken"))
    try:
        from botocore.config import Config

        if "tcp_keepalive" in getattr(Config, "OPTION_DEFAULTS", {}):
            checks.append(Check("versions", "Config(tcp_keepalive)", "ok", "supported by this botocore"))
        else:
            checks.append(Check("versions", "Config(tcp_keepalive)", "warn", "not supported by this botocore"))
    except Exception:
        pass
    return checks


def _read_sysctl(name: str) -> int | None:
    try:
        return int(Path("/proc/sys/net/ipv4", name).read_text().strip())
    except (OSError, ValueError):
        return None


def check_keepalive(settings: Any) -> list[Check]:
    checks = []
    keepalive_time = _read_sysctl("tcp_keepalive_time")
    interval = _read_sysctl("tcp_keepalive_intvl")
    probes = _read_sysctl("tcp_keepalive_probes")
    if keepalive_time is None:
        checks.append(Check("keep-alive", "kernel defaults", "info",
                            "net.ipv4.tcp_keepalive_* not readable here (not Linux, or /proc hidden)"))
    else:
        detail = (f"net.ipv4.tcp_keepalive_time={keepalive_time}s, tcp_keepalive_intvl={interval}s, "
                  f"tcp_keepalive_probes={probes}")
        if keepalive_time >= NAT_IDLE_TIMEOUT:
            checks.append(Check("keep-alive", "kernel defaults", "warn",
                                f"{detail}: first probe after {keepalive_time}s, later than the {NAT_IDLE_TIMEOUT}s "
                                "idle timeout of NAT gateways/VPC endpoints/NLBs. Sockets without their own "
                                "TCP_KEEPIDLE are dropped silently when idle; bedrock-hooks sets it per socket, "
                                "other clients need `sysctl -w net.ipv4.tcp_keepalive_time=45`"))
        else:
            checks.append(Check("keep-alive", "kernel defaults", "ok",
                                f"{detail}: first probe before the {NAT_IDLE_TIMEOUT}s NAT/VPC-endpoint idle timeout"))
    ok, detail = probe_socket_keepalive(settings.keepalive_idle, settings.keepalive_interval,
                                        settings.keepalive_count)
    checks.append(Check("keep-alive", "per-socket TCP_KEEPIDLE", "ok" if ok else "warn", detail))
    if not settings.keepalive:
        checks.append(Check("keep-alive", "BEDROCK_HOOKS_KEEPALIVE", "warn",
                            "off: idle Bedrock connections rely on the kernel defaults above"))
    elif settings.keepalive_idle >= NAT_IDLE_TIMEOUT:
        checks.append(Check("keep-alive", "BEDROCK_HOOKS_KEEPALIVE_IDLE", "warn",
                            f"{settings.keepalive_idle}s is not below the {NAT_IDLE_TIMEOUT}s idle timeout"))
    if not settings.pool_max_idle or settings.pool_max_idle >= NAT_IDLE_TIMEOUT:
        shown = "off" if not settings.pool_max_idle else f"{settings.pool_max_idle:g}s"
        checks.append(Check("keep-alive", "BEDROCK_HOOKS_POOL_MAX_IDLE", "warn",
                            f"{shown}: pooled connections idle past {NAT_IDLE_TIMEOUT}s may be reused after a "
                            "silent drop (first call after a pause hangs)"))
    return checks


def _library_socket_options(idle: int, interval: int, count: int) -> list[tuple[str, int, int, int]]:
    """(label, level, option, value) for the keep-alive options bedrock-hooks would set."""
    names = {}
    for name in ("SO_KEEPALIVE", "TCP_KEEPIDLE", "TCP_KEEPALIVE", "TCP_KEEPINTVL", "TCP_KEEPCNT"):
        if hasattr(socket, name):
            names.setdefault(int(getattr(socket, name)), name)
    try:  # the library's own choice, so doctor tests exactly what clients would get
        from . import keepalive
        from .config import Settings

        options = keepalive.keepalive_options(Settings(keepalive_idle=idle, keepalive_interval=interval,
                                                       keepalive_count=count))
    except Exception:
        idle_option = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
        options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
        if idle_option is not None:
            options.append((socket.IPPROTO_TCP, int(idle_option), idle))
            for name, value in (("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
                if hasattr(socket, name):
                    options.append((socket.IPPROTO_TCP, int(getattr(socket, name)), value))
    return [(names.get(option, str(option)), level, option, value) for level, option, value in options]


def probe_socket_keepalive(idle: int = 45, interval: int = 15, count: int = 4) -> tuple[bool, str]:
    """Set the keep-alive options on a real, connected loopback TCP socket and read them back.

    Containers and sandboxes sometimes refuse or ignore these options; a read-back from a connected
    socket proves the kernel took them, which an option constant existing in :mod:`socket` does not.
    """
    options = _library_socket_options(idle, interval, count)
    if not any(label in ("TCP_KEEPIDLE", "TCP_KEEPALIVE") for label, *_ in options):
        return False, ("no per-socket idle option (TCP_KEEPIDLE) usable here: the first probe follows the OS "
                       "default, so lower net.ipv4.tcp_keepalive_time (or equivalent) below 350 s")
    listener = client = server = None
    try:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(2.0)
        client = socket.create_connection(listener.getsockname(), timeout=2.0)
        server, _ = listener.accept()
        for _, level, option, value in options:
            client.setsockopt(level, option, value)
        read = {label: client.getsockopt(level, option) for label, level, option, _ in options}
        wanted = {label: value for label, _, _, value in options}
        if all(bool(read[k]) if k == "SO_KEEPALIVE" else read[k] == v for k, v in wanted.items()):
            shown = ", ".join(f"{k}={v}" for k, v in read.items())
            return True, f"works on a connected TCP socket here ({shown})"
        return False, f"the kernel did not keep the values (asked {wanted}, got {read})"
    except OSError as exc:
        return False, f"refused here ({exc}): rely on the kernel's net.ipv4.tcp_keepalive_time"
    finally:
        for sock in (client, server, listener):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass


def _quiet_config_warnings():
    """doctor reports rejected values itself; the config logger's one-line warnings would duplicate it."""
    import contextlib
    import logging

    @contextlib.contextmanager
    def quiet():
        logger = logging.getLogger("bedrock_hooks.config")
        previous = logger.disabled
        logger.disabled = True
        try:
            yield
        finally:
            logger.disabled = previous

    return quiet()


def check_configuration(environ: Mapping[str, str], *, verbose: bool = False) -> tuple[list[Check], Any]:
    with _quiet_config_warnings():
        settings = load_settings(environ)
    checks = []
    if not settings.enabled:
        checks.append(Check("configuration", "BEDROCK_HOOKS_ENABLED", "warn",
                            f"{environ.get('BEDROCK_HOOKS_ENABLED')!r}: bedrock-hooks is switched off"))
    defaults = []
    for option in OPTIONS:
        value = getattr(settings, option.name)
        shown = ",".join(value) if isinstance(value, tuple) else ("on" if value is True else "off" if value is False
                                                                  else value)
        source = settings.sources.get(option.name, "default")
        if source == "default":
            defaults.append(Check("configuration", option.env, "info", f"{shown} (default)"))
        else:
            checks.append(Check("configuration", option.env, "ok", f"{shown} (set by {source})"))
    if verbose:
        checks.extend(defaults)
    else:
        checks.append(Check("configuration", "defaults", "info",
                            f"{len(defaults)} of {len(OPTIONS)} options at their defaults (--verbose lists them)"))
    for variable, raw, used in settings.rejected:
        checks.append(Check("configuration", variable, "warn", f"rejected value {raw!r}; using {used}"))
    known = {o.env for o in OPTIONS} | set(LAUNCHER_VARIABLES)
    for name in sorted(environ):
        if name.startswith("BEDROCK_HOOKS_") and name not in known:
            checks.append(Check("configuration", name, "warn", "unknown variable (typo?): it has no effect"))
    for name, meaning in LAUNCHER_VARIABLES.items():
        if name in environ:
            checks.append(Check("configuration", name, "info", f"{environ[name]!r}: {meaning}"))
    return checks, settings


def check_zero_code(environ: Mapping[str, str]) -> list[Check]:
    checks = []
    directory = bootstrap_dir()
    present = (directory / "sitecustomize.py").is_file()
    checks.append(Check("zero-code", "launcher bootstrap", "ok" if present else "fail",
                        f"{directory}" if present else f"missing: {directory / 'sitecustomize.py'}"))
    files = autoload.installed_files()
    if files:
        state = "on" if autoload.requested(environ) else f"off (set {autoload.ENV_VAR}=1 to activate)"
        checks.append(Check("zero-code", "always-on .pth", "info", f"{', '.join(map(str, files))}; {state}"))
    else:
        checks.append(Check("zero-code", "always-on .pth", "info", "not installed (bedrock-hooks enable-pth)"))
    return checks


def credential_source(timeout: float = 5.0) -> tuple[str, str]:
    """(status, detail) for the credential provider botocore would use; never a secret.

    The lookup runs in a daemon thread with a deadline and IMDS limited to one 1-second attempt: on
    a laptop the instance-metadata provider would otherwise wait for a host that does not exist,
    and a ``credential_process`` may hang.
    """
    result: dict[str, Any] = {}

    def lookup() -> None:
        try:
            import botocore.session

            session = botocore.session.Session()
            session.set_config_variable("metadata_service_timeout", 1)
            session.set_config_variable("metadata_service_num_attempts", 1)
            result["region"] = session.get_config_variable("region")
            result["profile"] = session.get_config_variable("profile")
            credentials = session.get_credentials()
            result["method"] = getattr(credentials, "method", None) if credentials is not None else None
            result["found"] = credentials is not None
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=lookup, name="bedrock-hooks-doctor-credentials", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return "warn", (f"lookup did not finish within {timeout:g}s (a slow credential_process, SSO or "
                        "instance-metadata provider?): clients would block the same way on first use")
    if "error" in result:
        return "warn", f"lookup failed: {result['error']}"
    where = f"profile {result.get('profile') or 'default'}, region {result.get('region') or 'not set'}"
    if not result.get("found"):
        return "warn", f"no credentials found ({where}): calls fail with NoCredentialsError"
    return "ok", f"{result.get('method')} ({where})"


def measure_clock_offset(endpoint: str, timeout: float = 5.0) -> tuple[str, str, float | None]:
    """Offset of the local clock from ``endpoint``'s HTTP ``Date`` header, in seconds.

    Positive means the server is ahead (the local clock is behind). The header has one-second
    resolution, so the result is +-1 s; the local time is taken at the middle of the round trip.
    """
    request = urllib.request.Request(endpoint, method="GET", headers={"User-Agent": f"bedrock-hooks-doctor/{__version__}"})
    before = time.time()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - user-given URL
            date = response.headers.get("Date")
    except urllib.error.HTTPError as exc:  # 403/404 from an AWS endpoint still carry a Date
        date = exc.headers.get("Date") if exc.headers else None
    except Exception as exc:
        return "warn", f"could not reach {endpoint}: {type(exc).__name__}: {exc}", None
    after = time.time()
    if not date:
        return "warn", f"{endpoint} sent no Date header", None
    try:
        server = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return "warn", f"unparsable Date header {date!r}", None
    offset = server - (before + after) / 2
    direction = "behind" if offset > 0 else "ahead of"
    detail = (f"local clock is {abs(offset):.1f}s {direction} {endpoint} (Date: {date}; "
              f"+-1s, round trip {after - before:.2f}s)")
    if abs(offset) >= SIGV4_TOLERANCE:
        return "fail", detail + f": beyond SigV4's {SIGV4_TOLERANCE}s tolerance, requests fail as expired", offset
    if abs(offset) >= 60:
        return "warn", detail + ": synchronise the clock (NTP/chrony)", offset
    return "ok", detail, offset


def doctor(environ: Mapping[str, str] | None = None, *, endpoint: str | None = None,
           timeout: float = 5.0, verbose: bool = False) -> list[Check]:
    """Every doctor check, as data (``--json`` prints it; tests read it)."""
    env = os.environ if environ is None else environ
    checks = check_versions()
    config_checks, settings = check_configuration(env, verbose=verbose)
    checks.extend(check_keepalive(settings))
    checks.extend(config_checks)
    checks.extend(check_zero_code(env))
    status, detail = credential_source(timeout)
    checks.append(Check("credentials", "source", status, detail))
    if endpoint:
        status, detail, _ = measure_clock_offset(endpoint, timeout)
        checks.append(Check("clock", "offset", status, detail))
    else:
        checks.append(Check("clock", "offset", "info",
                            "not measured: pass --endpoint https://bedrock-runtime.<region>.amazonaws.com"))
    return checks


def render_checks(checks: Sequence[Check]) -> str:
    lines = [f"bedrock-hooks doctor: bedrock-hooks {__version__}, Python {platform.python_version()}, "
             f"{platform.system()} {platform.release()}"]
    section = None
    for check in checks:
        if check.section != section:
            section = check.section
            lines.append("")
            lines.append(section.capitalize())
        lines.append(f"  [{check.status}]{' ' * (5 - len(check.status))}{check.name}: {check.detail}")
    counts = {s: sum(c.status == s for c in checks) for s in ("fail", "warn")}
    lines.append("")
    lines.append(f"{counts['fail']} problem(s), {counts['warn']} warning(s).")
    return "\n".join(lines)


# -- explain / catalog ---------------------------------------------------------------------------

_BOTOCORE_ERROR = re.compile(r"An error occurred \(([^)]+)\) when calling the \w+ operation[^:]*:\s*(.*)", re.S)
_TOKEN = re.compile(r"^[A-Za-z][\w.:#/-]*$")


@dataclass(frozen=True)
class Explanation:
    entry: Entry
    matched_by: str


def explain_lookup(text: str = "", *, status: int | None = None, code: str | None = None) -> Explanation | None:
    """The catalog entry for an error code, an entry name, a message, an exception name or a status.

    Accepts what people paste: ``ThrottlingException``, ``503``, the message alone, or botocore's
    whole ``An error occurred (X) when calling the Y operation: message`` line.
    """
    text = (text or "").strip()
    message = text
    parsed = _BOTOCORE_ERROR.search(text)
    if parsed:
        code = code or parsed.group(1)
        message = parsed.group(2).strip()
    elif text.isdigit() and status is None:
        status, message = int(text), ""
    elif _TOKEN.match(text) and code is None:
        code, message = text, ""
    if code or message:
        found = classify(ErrorFacts(status=status, code=code, message=message))
        if found is not None:
            how = []
            if message and found.entry.message is not None and found.entry.message.search(message):
                how.append("message pattern")
            elif code and not code.isdigit():
                how.append(f"error code {code!r}" if _code_known(found.entry, code) else f"HTTP status {status}")
            else:
                how.append(f"HTTP status {status}")
            return Explanation(found.entry, how[0])
    if code:
        lowered = code.lower()
        for entry in ENTRIES:
            if entry.name.lower() == lowered:
                return Explanation(entry, f"entry name {entry.name!r}")
        for entry in ENTRIES:
            if any(name.lower() == lowered for name in entry.exceptions):
                return Explanation(entry, f"exception class {code!r} (no HTTP response)")
        for entry in ENTRIES:  # a single word can still be a message fragment ("FTUFormNotFilled")
            if entry.message is not None and entry.message.search(code):
                return Explanation(entry, "message pattern")
    if message and not code:
        for entry in ENTRIES:  # messages without a code or status, as pasted from a log
            if entry.message is not None and entry.message.search(message):
                return Explanation(entry, "message pattern")
    if status is not None:
        found = classify(ErrorFacts(status=status))
        if found is not None:
            return Explanation(found.entry, f"HTTP status {status}")
    return None


def _code_known(entry: Entry, code: str) -> bool:
    normalised = code.split(":", 1)[0].split("#")[-1].strip().lower()
    return normalised in {c.lower() for c in entry.codes}


def describe_decision(entry: Entry) -> str:
    """What the library does with the entry, in the words of the configuration options."""
    if entry.decision is Decision.RETRY:
        curve = {"throttle": "the longer throttling backoff (BEDROCK_HOOKS_THROTTLE_BACKOFF_BASE)",
                 "reconnect": "an immediate retry on a fresh connection, then exponential backoff",
                 }.get(entry.backoff.value, "exponential backoff with full jitter (BEDROCK_HOOKS_BACKOFF_BASE)")
        cap = f", at most {entry.max_attempts} attempts for this error" if entry.max_attempts else ""
        return (f"retries with {curve}, up to BEDROCK_HOOKS_MAX_ATTEMPTS attempts within "
                f"BEDROCK_HOOKS_RETRY_DEADLINE{cap}; the final error carries a hint.")
    if entry.decision is Decision.FIX_AND_RETRY:
        remedy = entry.remedy.value if entry.remedy else "repair"
        return f"applies the {remedy} remedy and retries once, at once; otherwise fails with a hint."
    if entry.decision is Decision.WAIT:
        wait = f" (~{entry.retry_after:.0f}s unless the message states a wait)" if entry.retry_after else ""
        return f"fails now without retrying (it clears only after minutes); the error carries retry_after{wait}."
    return "fails at once with a hint, never retried (even where botocore would retry)."


def render_explanation(found: Explanation) -> str:
    entry = found.entry
    http = f"HTTP {entry.status}" if entry.status else "no HTTP response"
    lines = [f"{entry.name} ({http}; decision: {entry.decision.value})",
             f"Matched by: {found.matched_by}",
             f"Cause: {entry.cause}",
             "Solution:"]
    lines.extend(f"  - {step}" for step in entry.solution)
    lines.append(f"bedrock-hooks: {describe_decision(entry)}")
    return "\n".join(lines)


def _recognised_by(entry: Entry) -> str:
    parts = []
    if entry.codes:
        parts.append("codes " + ", ".join(sorted(entry.codes)))
    if entry.message is not None:
        parts.append("message /" + entry.message.pattern + "/")
    if entry.statuses:
        parts.append("status " + ", ".join(map(str, sorted(entry.statuses))))
    if entry.exceptions:
        parts.append("exceptions " + ", ".join(sorted(entry.exceptions)))
    return "; ".join(parts)


def render_catalog(fmt: str = "text") -> str:
    if fmt == "json":
        rows = [{"name": e.name, "status": e.status, "decision": e.decision.value, "cause": e.cause,
                 "solution": list(e.solution), "codes": sorted(e.codes), "statuses": sorted(e.statuses),
                 "message": e.message.pattern if e.message is not None else None,
                 "exceptions": sorted(e.exceptions), "source": e.source} for e in ENTRIES]
        return json.dumps(rows, indent=2)
    if fmt == "markdown":
        try:  # the README's own table, so the two cannot differ
            from .reference import catalog_table

            return catalog_table()
        except Exception:
            pass
        lines = ["| Entry | HTTP | Decision | Recognised by | Cause | First step |",
                 "|---|---|---|---|---|---|"]
        for e in ENTRIES:
            cells = [e.name, str(e.status or "-"), e.decision.value, _recognised_by(e), e.cause,
                     e.solution[0] if e.solution else ""]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)
    rows = [("ENTRY", "HTTP", "DECISION", "CAUSE")]
    rows += [(e.name, str(e.status or "-"), e.decision.value, e.cause) for e in ENTRIES]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out = []
    for row in rows:
        cause = row[3] if len(row[3]) <= 90 else row[3][:87] + "..."
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + cause)
    return "\n".join(out)


# -- argument parsing ----------------------------------------------------------------------------

def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--propagate", action="store_true",
                        help="keep the bootstrap for child processes too (sets BEDROCK_HOOKS_PROPAGATE=1)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bedrock-hooks",
        description="Zero-code enablement and diagnostics for bedrock-hooks (Amazon Bedrock clients of boto3/botocore).")
    parser.add_argument("--version", action="version", version=f"bedrock-hooks {__version__}")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")

    run = sub.add_parser("run", help="run a command with bedrock-hooks installed in its Python processes",
                         description="Run COMMAND with the bootstrap sitecustomize on PYTHONPATH: every botocore "
                                     "session of the Python process is hardened when the application imports "
                                     "botocore. Example: bedrock-hooks run -- python app.py")
    _add_run_arguments(run)

    doc = sub.add_parser("doctor", help="check this host against the Bedrock troubleshooting advice")
    doc.add_argument("--endpoint", metavar="URL",
                     help="measure the local clock's offset from this endpoint's HTTP Date header")
    doc.add_argument("--timeout", type=float, default=5.0, help="seconds for the credential lookup and the endpoint")
    doc.add_argument("--json", action="store_true", help="print the checks as JSON")
    doc.add_argument("--verbose", "-v", action="store_true", help="also list options left at their defaults")

    exp = sub.add_parser("explain", help="show the catalog entry for an error code, message or status")
    exp.add_argument("error", nargs="*", help="an error code, entry name, message or botocore error line")
    exp.add_argument("--status", type=int, help="the HTTP status, alone or with a code/message")
    exp.add_argument("--code", help="the error code, when the positional text is the message")

    cat = sub.add_parser("catalog", help="print every catalog entry")
    cat.add_argument("--format", choices=("text", "markdown", "json"), default="text")

    for name, verb in (("enable-pth", "write"), ("disable-pth", "remove")):
        pth = sub.add_parser(name, help=f"{verb} the always-on {autoload.PTH_NAME} (active only with "
                                        f"{autoload.ENV_VAR}=1)")
        pth.add_argument("--dir", type=Path, help="site directory (default: this interpreter's site-packages)")
        pth.add_argument("--user", action="store_true", help="use the user site-packages directory")

    sub.add_parser("bootstrap-path", help="print the directory to put on PYTHONPATH for always-on use")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bedrock-hooks`` and ``python -m bedrock_hooks``."""
    try:
        return _main(argv)
    except BrokenPipeError:  # `bedrock-hooks catalog | head`: the reader left, which is not an error
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stops the flush-at-exit error too
        except OSError:
            pass
        return 0


def _main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.subcommand is None:
        parser.print_help()
        return 2
    if args.subcommand == "run":
        return run_command(args.command, propagate=args.propagate)
    if args.subcommand == "doctor":
        checks = doctor(endpoint=args.endpoint, timeout=args.timeout, verbose=args.verbose)
        if args.json:
            print(json.dumps([asdict(c) for c in checks], indent=2))
        else:
            print(render_checks(checks))
        return 1 if any(c.status == "fail" for c in checks) else 0
    if args.subcommand == "explain":
        text = " ".join(args.error)
        if not text and args.status is None and args.code is None:
            parser.error("explain needs an error code, a message or --status")
        found = explain_lookup(text, status=args.status, code=args.code)
        if found is None:
            print(f"Not in the catalog: {text or args.code or args.status!r}. bedrock-hooks leaves such errors to "
                  "botocore's own retry handler and adds no hint.")
            return 1
        print(render_explanation(found))
        return 0
    if args.subcommand == "catalog":
        print(render_catalog(args.format))
        return 0
    if args.subcommand in ("enable-pth", "disable-pth"):
        try:
            if args.subcommand == "enable-pth":
                path = autoload.enable(args.dir, user=args.user)
                print(f"wrote {path}\nIt does nothing until {autoload.ENV_VAR}=1 is set in the environment.")
            else:
                removed = autoload.disable(args.dir, user=args.user)
                print("\n".join(f"removed {p}" for p in removed) or f"no {autoload.PTH_NAME} found")
        except OSError as exc:
            print(f"bedrock-hooks {args.subcommand}: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.subcommand == "bootstrap-path":
        print(bootstrap_dir())
        return 0
    parser.error(f"unknown command {args.subcommand}")  # pragma: no cover - argparse rejects it first
    return 2


def run_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bedrock-hooks-run``: ``bedrock-hooks-run [--propagate] [--] command ...``."""
    parser = argparse.ArgumentParser(prog="bedrock-hooks-run",
                                     description="Run a command with bedrock-hooks installed in its Python processes.")
    _add_run_arguments(parser)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_command(args.command, propagate=args.propagate)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
