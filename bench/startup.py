"""What zero-code enablement costs at interpreter start, and what installing costs later.

Measures, in fresh interpreters (runs interleaved so drift hits both sides equally):

* ``python -c pass`` without and with the bootstrap directory on ``PYTHONPATH`` (what
  ``bedrock-hooks run`` adds to *every* Python process it starts, including ones that never touch
  botocore): medians, the ratio and the absolute difference in ms;
* ``python -c "import boto3"`` without and with the bootstrap: the deferred cost, paid once when the
  application first imports botocore (wrapt, ``bedrock_hooks`` and ``install_global()``);
* in-process: ``import bedrock_hooks`` and ``bedrock_hooks.install()`` (boto3 already imported);
* ``bedrock-hooks run -- python -c pass``: the launcher's own one-off start (it ``exec``\\ s).

Usage: ``python bench/startup.py [--runs N] [--json]``; ``--smoke`` runs everything 3 times (used by
the test suite to keep this script working; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = REPO / "bedrock_hooks" / "bootstrap"

IN_PROCESS = """
import json, time
import boto3
t0 = time.perf_counter()
import bedrock_hooks
t1 = time.perf_counter()
bedrock_hooks.install()
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "install_ms": (t2 - t1) * 1e3}))
"""


def _env(bootstrap: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEDROCK_HOOKS_", "PYTHON"))}
    path = [str(REPO)]
    if bootstrap:
        path.insert(0, str(BOOTSTRAP))
    env["PYTHONPATH"] = os.pathsep.join(path)
    env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return env


def _time(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1e3


def compare(code: str, runs: int) -> dict[str, float]:
    """Interleaved timings of ``python -c code`` without/with the bootstrap (after one warm-up each)."""
    cmd = [sys.executable, "-c", code]
    plain_env, boot_env = _env(False), _env(True)
    _time(cmd, plain_env), _time(cmd, boot_env)
    plain, boot = [], []
    for _ in range(runs):
        plain.append(_time(cmd, plain_env))
        boot.append(_time(cmd, boot_env))
    p, b = statistics.median(plain), statistics.median(boot)
    return {"runs": runs, "plain_ms": round(p, 2), "bootstrap_ms": round(b, 2), "ratio": round(b / p, 3),
            "delta_ms": round(b - p, 2), "plain_stdev_ms": round(statistics.pstdev(plain), 2),
            "bootstrap_stdev_ms": round(statistics.pstdev(boot), 2)}


def in_process(runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", IN_PROCESS], env=_env(False), check=True,
                             capture_output=True, text=True).stdout
        samples.append(json.loads(out.strip().splitlines()[-1]))
    return {key: round(statistics.median(s[key] for s in samples), 2) for key in ("import_ms", "install_ms")}


def launcher(runs: int) -> dict[str, float]:
    direct = [sys.executable, "-c", "pass"]
    via = [sys.executable, "-m", "bedrock_hooks", "run", "--", *direct]
    env = _env(False)
    a = statistics.median(_time(direct, env) for _ in range(runs))
    b = statistics.median(_time(via, env) for _ in range(runs))
    return {"direct_ms": round(a, 2), "via_launcher_ms": round(b, 2), "delta_ms": round(b - a, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--smoke", action="store_true", help="3 runs of everything (for the test suite)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    runs = 3 if args.smoke else max(1, args.runs)
    results = {
        "python": sys.version.split()[0],
        "startup_pass": compare("pass", runs),
        "first_boto3_import": compare("import boto3", max(3, runs // 4)),
        "in_process": in_process(max(3, runs // 4)),
        "launcher": launcher(max(3, runs // 4)),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    s, f, i, la = results["startup_pass"], results["first_boto3_import"], results["in_process"], results["launcher"]
    print(f"Python {results['python']}, medians of {s['runs']} interleaved runs")
    print(f"python -c pass         plain {s['plain_ms']:7.2f} ms   bootstrap {s['bootstrap_ms']:7.2f} ms   "
          f"ratio {s['ratio']:.3f}   delta {s['delta_ms']:+.2f} ms")
    print(f"python -c 'import boto3' plain {f['plain_ms']:7.2f} ms   bootstrap {f['bootstrap_ms']:7.2f} ms   "
          f"ratio {f['ratio']:.3f}   delta {f['delta_ms']:+.2f} ms  (paid once, at the first botocore import)")
    print(f"import bedrock_hooks   {i['import_ms']:.2f} ms;  install() with boto3 loaded {i['install_ms']:.2f} ms")
    print(f"launcher               direct {la['direct_ms']:.2f} ms   via bedrock-hooks run {la['via_launcher_ms']:.2f} ms   "
          f"delta {la['delta_ms']:+.2f} ms  (once per command; the launcher execs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
