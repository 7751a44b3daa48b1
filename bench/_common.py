"""Shared pieces of the benchmarks: the server process, client modes, a closed-loop load runner, stats."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]
CREDS = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


# -- the server process -------------------------------------------------------------------------

class ServerProcess:
    """``bench/_serve.py`` in a child process: its own GIL, so it does not perturb the measured client.

    ``quotas``: token quotas as ``_serve.py --quota`` specs, e.g.
    ``["anthropic.claude-sonnet-4*=200000,output_tokens=300"]`` (kept across scenarios).
    """

    def __init__(self, quotas: Iterable[str] = ()) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BEDROCK_HOOKS_")}
        quota_args = [arg for spec in quotas for arg in ("--quota", spec)]
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_serve.py")), *quota_args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.url: str = self._read()["url"]

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise RuntimeError("benchmark server process exited")
        return json.loads(line)

    def send(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def scenario(self, name: str, **params: Any) -> None:
        self.send(cmd="scenario", name=name, **params)

    def stats(self) -> dict[str, Any]:
        return self.send(cmd="stats")

    def quota_stats(self) -> dict[str, dict[str, Any]]:
        """Token-quota counters per model (``QuotaStats`` fields as a dict)."""
        return self.stats()["quota"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="quit")
            except Exception:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- clients --------------------------------------------------------------------------------------

def new_session() -> Any:
    import boto3

    return boto3.Session(region_name="us-east-1", **CREDS)


def make_client(session: Any, url: str, *, retry_mode: str | None = None, pool: int = 10,
                read_timeout: float = 10.0) -> Any:
    from botocore.config import Config

    kwargs: dict[str, Any] = {"connect_timeout": 2, "read_timeout": read_timeout, "max_pool_connections": pool}
    if retry_mode:
        kwargs["retries"] = {"mode": retry_mode}
    return session.client("bedrock-runtime", endpoint_url=url, config=Config(**kwargs))


def converse(client: Any) -> Any:
    return client.converse(modelId=MODEL, messages=MESSAGES)


#: The modes compared under failure. ``retry_mode``: the client's botocore mode (None: botocore's
#: default, legacy); ``hooks``: install() overrides, or None for plain botocore.
MODES: dict[str, dict[str, Any]] = {
    "botocore legacy": {"retry_mode": "legacy", "hooks": None},
    "botocore standard": {"retry_mode": "standard", "hooks": None},
    "botocore adaptive": {"retry_mode": "adaptive", "hooks": None},
    "bedrock-hooks, rate limiter off": {"retry_mode": None, "hooks": {"rate_limit": False}},
    "bedrock-hooks": {"retry_mode": None, "hooks": {"rate_limit": True}},
}


def hooks_available_options() -> set[str]:
    from bedrock_hooks.config import OPTIONS_BY_NAME

    return set(OPTIONS_BY_NAME)


def modes() -> dict[str, dict[str, Any]]:
    """MODES, minus the limiter row when this version of the library has no rate limiter."""
    if "rate_limit" in hooks_available_options():
        return dict(MODES)
    return {name: {**spec, "hooks": {}} for name, spec in MODES.items() if name != "bedrock-hooks, rate limiter off"}


def build_clients(spec: dict[str, Any], url: str, count: int, *, shared: bool,
                  hook_overrides: dict[str, Any] | None = None) -> list[Any]:
    """``count`` clients for the worker threads (one client used by all when ``shared``)."""
    import bedrock_hooks

    session = new_session()
    distinct = 1 if shared else count
    clients = [make_client(session, url, retry_mode=spec["retry_mode"], pool=max(10, count)) for _ in range(distinct)]
    if spec["hooks"] is not None:
        overrides = {**spec["hooks"], **(hook_overrides or {})}
        for client in clients:
            bedrock_hooks.install(client, **overrides)
    return clients * count if shared else clients


def release_clients(clients: Iterable[Any]) -> None:
    import bedrock_hooks

    for client in {id(c): c for c in clients}.values():
        bedrock_hooks.uninstall(client)
        close = getattr(client, "close", None)
        if close is not None:
            close()


# -- closed-loop load -----------------------------------------------------------------------------

def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def run_load(clients: list[Any], duration: float, deadline: float,
             call: Callable[[Any], Any] = converse) -> dict[str, Any]:
    """Each client's thread calls back to back for ``duration`` s; a call succeeds if it returns
    within ``deadline`` s. Calls started before the end are allowed to finish."""
    records: list[tuple[bool, float, str]] = []
    lock = threading.Lock()
    start_gate = threading.Event()
    end = [0.0]

    def worker(client: Any) -> None:
        local: list[tuple[bool, float, str]] = []
        start_gate.wait()
        while time.monotonic() < end[0]:
            t0 = time.monotonic()
            try:
                call(client)
                outcome = "ok"
            except Exception as exc:  # every failure counts, whatever botocore raised
                outcome = error_code(exc)
            latency = time.monotonic() - t0
            if outcome == "ok" and latency > deadline:
                outcome = "late"
            local.append((outcome == "ok", latency, outcome))
        with lock:
            records.extend(local)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    end[0] = t0 + duration
    start_gate.set()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    ok = [lat for good, lat, _ in records if good]
    every = [lat for _, lat, _ in records]
    return {
        "calls": len(records),
        "successes": len(ok),
        "success_rate": len(ok) / len(records) if records else 0.0,
        "outcomes": dict(Counter(o for _, _, o in records)),
        "wall_s": wall,
        "p50_ms": percentile(every, 50) * 1e3,
        "p99_ms": percentile(every, 99) * 1e3,
        "p50_ok_ms": percentile(ok, 50) * 1e3,
        "p99_ok_ms": percentile(ok, 99) * 1e3,
        "max_ms": (max(every) if every else 0.0) * 1e3,
    }


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum counts of repeated runs of one mode; latencies are averaged (each run's percentiles)."""
    if len(runs) == 1:
        return runs[0]
    out: dict[str, Any] = {}
    for key in ("calls", "successes", "requests", "wasted", "wall_s"):
        out[key] = sum(r.get(key, 0) for r in runs)
    out["success_rate"] = out["successes"] / out["calls"] if out["calls"] else 0.0
    outcomes: Counter[str] = Counter()
    server: Counter[str] = Counter()
    for r in runs:
        outcomes.update(r["outcomes"])
        server.update(r.get("server_outcomes", {}))
    out["outcomes"], out["server_outcomes"] = dict(outcomes), dict(server)
    for key in ("p50_ms", "p99_ms", "p50_ok_ms", "p99_ok_ms"):
        out[key] = sum(r[key] for r in runs) / len(runs)
    out["max_ms"] = max(r["max_ms"] for r in runs)
    out["attempts_per_success"] = out["requests"] / out["successes"] if out["successes"] else float("inf")
    out["repeats"] = len(runs)
    return out


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


# -- reporting ------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    import boto3
    import botocore
    import urllib3

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "botocore": botocore.__version__,
        "boto3": boto3.__version__,
        "urllib3": urllib3.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def markdown_table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save_figure(fig: Any, path: Any, plt: Any) -> Any:
    """Lay out, write the PNG and free the figure: the same last step of every benchmark plot."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def try_pyplot() -> Any:
    """matplotlib's pyplot with the file-only backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    return plt
