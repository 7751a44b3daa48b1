"""``bedrock-hooks doctor``: check this host against the advice the library is built from.

Each section of the report is one function from a :class:`Context` to a list of :class:`Check`
rows, listed in :data:`SECTIONS`; :func:`doctor` runs them in order and :func:`render_checks`
prints them grouped by section. A new section is one function added to :data:`SECTIONS`.

Nothing here changes the process it runs in, and nothing prints a secret: credentials are
reported by the provider's *method* only.
"""

from __future__ import annotations

import contextlib
import email.utils
import importlib
import logging
import platform
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, autoload
from .config import LAUNCHER_VARIABLES, OPTIONS, Settings, load_settings
from .launcher import bootstrap_dir

#: Minimum versions: pyproject's floor. Bedrock's Converse API is checked in the model itself.
MIN_VERSIONS = {"botocore": (1, 34, 143), "boto3": (1, 34, 143), "wrapt": (1, 14, 0)}  # = pyproject.toml
#: NAT gateways, interface VPC endpoints and NLBs drop TCP flows idle this long, silently (seed).
NAT_IDLE_TIMEOUT = 350
#: SigV4 rejects requests signed this far from AWS time (RequestExpired / signature expired).
SIGV4_TOLERANCE = 300


@dataclass
class Check:
    """One line of the doctor report."""

    section: str
    name: str
    status: str  #: "ok", "warn", "fail" or "info"
    detail: str


@dataclass
class Context:
    """What every section may read: the environment, the settings it yields, the command's options."""

    environ: Mapping[str, str]
    endpoint: str | None = None
    timeout: float = 5.0
    verbose: bool = False
    settings: Settings = field(init=False)

    def __post_init__(self) -> None:
        with _quiet_config_warnings():  # doctor reports rejected values itself, as checks
            self.settings = load_settings(self.environ)


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


def check_versions(context: Context) -> list[Check]:
    """Python, bedrock-hooks, botocore/boto3/wrapt against the floor, and what this botocore can do."""
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


def check_keepalive(context: Context) -> list[Check]:
    """Kernel keep-alive defaults and the per-socket options against the 350 s NAT idle timeout."""
    settings = context.settings
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


@contextlib.contextmanager
def _quiet_config_warnings() -> Iterator[None]:
    """doctor reports rejected values itself; the config logger's one-line warnings would duplicate it."""
    logger = logging.getLogger("bedrock_hooks.config")
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous


def check_configuration(context: Context) -> list[Check]:
    """Which variable set which option, rejected values, unknown ``BEDROCK_HOOKS_*`` names (typos)."""
    environ, settings, verbose = context.environ, context.settings, context.verbose
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
    return checks


def check_zero_code(context: Context) -> list[Check]:
    """The launcher's bootstrap directory and the always-on ``.pth`` (present, active or not)."""
    environ = context.environ
    checks = []
    directory = Path(bootstrap_dir())
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


def check_credentials(context: Context) -> list[Check]:
    status, detail = credential_source(context.timeout)
    return [Check("credentials", "source", status, detail)]


def check_clock(context: Context) -> list[Check]:
    if not context.endpoint:
        return [Check("clock", "offset", "info",
                      "not measured: pass --endpoint https://bedrock-runtime.<region>.amazonaws.com")]
    status, detail, _ = measure_clock_offset(context.endpoint, context.timeout)
    return [Check("clock", "offset", status, detail)]


def check_compatibility(context: Context) -> list[Check]:
    """The private botocore/urllib3 internals the library relies on: present, or which feature is off."""
    from . import compat

    _import_if_installed("aiobotocore")  # its rows are probed only once it is imported (compat.Check.loaded)
    checks = []
    for row in compat.report():
        features = ", ".join(row.features)
        if row.pending:
            checks.append(Check("compatibility", row.internal, "info", f"not checked: {row.pending} not installed"))
        elif row.ok:
            checks.append(Check("compatibility", row.internal, "ok", f"present (used by {features})"))
        else:
            off = "; ".join(compat.FEATURES[name].does for name in row.features if name in compat.FEATURES)
            checks.append(Check("compatibility", row.internal, "warn",
                                f"missing ({row.problem}): off here: {off or features}"))
    return checks


def _import_if_installed(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception:  # absent, or broken: its compat rows say "not checked"
        pass


def check_state(context: Context) -> list[Check]:
    """Where shared state lives (``BEDROCK_HOOKS_STATE_URL``) and, for Redis, whether it answers a PING now."""
    from . import store

    url = getattr(context.settings, "state_url", "memory://") or "memory://"
    if not url.lower().startswith(("redis://", "rediss://")):
        return [Check("shared state", "store", "info", f"{url} (in-process: each process paces and remembers alone)")]
    where = store.redacted(url)  # never the password
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=min(1.0, context.timeout),
                                      socket_connect_timeout=min(1.0, context.timeout))
        started = time.monotonic()
        client.ping()
        elapsed = (time.monotonic() - started) * 1e3
        client.close()
    except Exception as exc:  # unreachable, refused, auth: the calls fall back to in-process state
        return [Check("shared state", "store", "warn",
                      f"{where} does not answer ({type(exc).__name__}): calls use in-process state until it does")]
    return [Check("shared state", "store", "ok",
                  f"{where} answers (PING {elapsed:.1f} ms; redis-py {redis.__version__}); calls wait at most "
                  f"{getattr(context.settings, 'state_timeout', 0.005) * 1e3:g} ms for it")]


Section = Callable[[Context], list[Check]]

#: The report, in order. Each function returns the rows of one section (its ``Check.section``).
SECTIONS: tuple[Section, ...] = (
    check_versions,
    check_compatibility,
    check_keepalive,
    check_state,
    check_configuration,
    check_zero_code,
    check_credentials,
    check_clock,
)


def doctor(environ: Mapping[str, str] | None = None, *, endpoint: str | None = None,
           timeout: float = 5.0, verbose: bool = False,
           sections: Sequence[Section] = SECTIONS) -> list[Check]:
    """Every doctor check, as data (``--json`` prints it; tests read it)."""
    import os

    context = Context(os.environ if environ is None else environ, endpoint=endpoint, timeout=timeout,
                      verbose=verbose)
    checks: list[Check] = []
    for section in sections:
        checks.extend(section(context))
    return checks


def render_checks(checks: Sequence[Check]) -> str:
    """The report as text: one heading per section, one line per check, a count of problems."""
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
