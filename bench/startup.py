"""What zero-code enablement costs at start, measured the way a user runs it.

Whole processes, started as a user starts them, each pair run in turn (A B A B ...) after a
warm-up so drift hits both sides alike; per pair the difference and the ratio, then medians:

* **the launcher**: the installed console scripts ``bedrock-hooks run -- python -c pass`` and
  ``bedrock-hooks-run python -c pass``, and ``python -m bedrock_hooks run -- python -c pass``,
  each against ``python -c pass`` (the launcher's own interpreter start, then the ``exec``), and
  ``python -c "import re, sys"``, what pip's console-script wrapper imports before the library runs;
* **the bootstrap**: ``python -c pass`` with and without the bootstrap directory on
  ``PYTHONPATH``, what every Python process under the launcher pays, and ``python -c "import
  boto3"`` likewise, the deferred cost paid once when the application first imports botocore;
* **in process** (boto3 already imported): ``from bedrock_hooks import install`` and ``install()``.

Wall time comes from ``time.perf_counter`` around each run, CPU time (user + sys) from the
kernel's accounting of the finished child (``os.wait4``); with ``exec`` the launcher and the
command are one process, so both are counted. A fresh, non-editable install is what a user has:
``--make-venv DIR`` creates one (``python -m venv DIR``, then ``pip install`` of this checkout and
its dependencies from the package index; ``--no-deps`` for the launcher figures alone) and
measures it; ``--python PATH`` measures another interpreter's installation. Without either, the
running interpreter's installation is measured (an editable install or a venv with system
site-packages adds its ``.pth`` files' cost to every start, on both sides).

Usage: ``python bench/startup.py [--make-venv DIR | --python PATH] [--runs N] [--json]``;
``--smoke`` runs everything 3 times (used by the test suite to keep this script working; its
numbers mean nothing).
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

IN_PROCESS = """
import json, time
import boto3
t0 = time.perf_counter()
from bedrock_hooks import install  # the package itself is lazy: this is the real import
t1 = time.perf_counter()
install()
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "install_ms": (t2 - t1) * 1e3}))
"""

FIND_BOOTSTRAP = "import importlib.util as u, os; print(os.path.join(u.find_spec('bedrock_hooks')" \
                 ".submodule_search_locations[0], 'bootstrap'))"


class Interpreter:
    """The Python whose installation of bedrock-hooks is measured, and its console scripts."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.scripts = Path(python).parent
        self.bootstrap = subprocess.run([python, "-c", FIND_BOOTSTRAP], env=clean_env(), check=True,
                                        capture_output=True, text=True).stdout.strip()

    def script(self, name: str) -> str:
        path = self.scripts / (name + (".exe" if os.name == "nt" else ""))
        if not path.is_file():
            raise SystemExit(f"{path} not found: install bedrock-hooks into {self.python}'s environment")
        return str(path)

    def has(self, module: str) -> bool:
        return subprocess.run([self.python, "-c", f"import {module}"], env=clean_env(),
                              capture_output=True).returncode == 0


def clean_env(bootstrap: str | None = None) -> dict[str, str]:
    """The caller's environment without BEDROCK_HOOKS_* and PYTHON* settings (optionally the bootstrap)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEDROCK_HOOKS_", "PYTHON"))}
    env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    if bootstrap:
        env["PYTHONPATH"] = bootstrap
    return env


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, cpu ms) of one whole process, its output discarded."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = (time.perf_counter() - start) * 1e3
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {proc.returncode}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1e3


def pair(a: tuple[list[str], dict[str, str]], b: tuple[list[str], dict[str, str]], runs: int) -> dict:
    """A against B, in turn, after one warm-up each: medians, per-pair differences and ratios."""
    run_once(*a), run_once(*b)
    samples = [(run_once(*a), run_once(*b)) for _ in range(runs)]
    out: dict = {"runs": runs, "a": " ".join(a[0]), "b": " ".join(b[0])}
    for i, kind in enumerate(("wall", "cpu")):
        xs, ys = [s[0][i] for s in samples], [s[1][i] for s in samples]
        deltas = [x - y for x, y in zip(xs, ys)]
        out.update({f"a_{kind}_ms": round(statistics.median(xs), 2), f"b_{kind}_ms": round(statistics.median(ys), 2),
                    f"delta_{kind}_ms": round(statistics.median(deltas), 2),
                    f"delta_{kind}_range_ms": [round(min(deltas), 2), round(max(deltas), 2)],
                    f"ratio_{kind}": round(statistics.median(x / y for x, y in zip(xs, ys)), 3)})
    return out


def launcher(interp: Interpreter, runs: int) -> dict[str, dict]:
    """The three ways to start the launcher, each against the bare command."""
    command = [interp.python, "-c", "pass"]
    direct = (command, clean_env())
    ways = {"console_script": [interp.script("bedrock-hooks"), "run", "--", *command],
            "run_script": [interp.script("bedrock-hooks-run"), *command],
            "python_m": [interp.python, "-m", "bedrock_hooks", "run", "--", *command]}
    results = {name: pair((cmd, clean_env()), direct, runs) for name, cmd in ways.items()}
    # what pip's console-script wrapper imports before it calls the entry point: outside the library's reach
    results["wrapper_imports"] = pair(([interp.python, "-c", "import re, sys"], clean_env()), direct, runs)
    return results


def compare(code: str, runs: int, interp: Interpreter | None = None) -> dict[str, float]:
    """``python -c code`` with the bootstrap on ``PYTHONPATH`` (A) against without (B)."""
    interp = interp or Interpreter(sys.executable)
    cmd = [interp.python, "-c", code]
    result = pair((cmd, clean_env(interp.bootstrap)), (cmd, clean_env()), runs)
    # the keys bench/run_all.py reads
    result.update(plain_ms=result["b_wall_ms"], bootstrap_ms=result["a_wall_ms"], ratio=result["ratio_wall"],
                  delta_ms=result["delta_wall_ms"])
    return result


def in_process(runs: int, interp: Interpreter | None = None) -> dict[str, float]:
    python = (interp or Interpreter(sys.executable)).python
    samples = []
    for _ in range(runs):
        out = subprocess.run([python, "-c", IN_PROCESS], env=clean_env(), check=True, capture_output=True,
                             text=True).stdout
        samples.append(json.loads(out.strip().splitlines()[-1]))
    return {key: round(statistics.median(s[key] for s in samples), 2) for key in ("import_ms", "install_ms")}


def make_venv(directory: Path, deps: bool = True) -> str:
    """A fresh venv with this checkout installed as a user would have it (a wheel, not editable)."""
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    python = str(directory / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *([] if deps else ["--no-deps"]), str(REPO)], check=True, env=clean_env())
    return python


def measure(interp: Interpreter, runs: int) -> dict:
    results = {"python": subprocess.run([interp.python, "-c", "import sys; print(sys.version.split()[0])"],
                                        capture_output=True, text=True).stdout.strip(),
               "interpreter": interp.python,
               "launcher": launcher(interp, runs),
               "startup_pass": compare("pass", runs, interp)}
    if interp.has("boto3"):
        results["first_boto3_import"] = compare("import boto3", max(3, runs // 4), interp)
        results["in_process"] = in_process(max(3, runs // 4), interp)
    return results


def render(r: dict) -> str:
    def row(label: str, p: dict) -> str:
        return (f"{label:<44} {p['a_wall_ms']:7.1f} vs {p['b_wall_ms']:6.1f} ms wall   "
                f"+{p['delta_wall_ms']:.1f} ms (pairs {p['delta_wall_range_ms'][0]:+.1f}..{p['delta_wall_range_ms'][1]:+.1f})"
                f"   cpu +{p['delta_cpu_ms']:.1f} ms   ratio {p['ratio_wall']:.2f}")

    la = r["launcher"]
    lines = [f"Python {r['python']} ({r['interpreter']}), medians of {la['console_script']['runs']} pairs, A vs B",
             row("bedrock-hooks run -- python -c pass", la["console_script"]),
             row("bedrock-hooks-run python -c pass", la["run_script"]),
             row("python -m bedrock_hooks run -- python -c pass", la["python_m"]),
             row("python -c 'import re, sys' (pip's wrapper)", la["wrapper_imports"]),
             row("python -c pass, bootstrap on PYTHONPATH", r["startup_pass"])]
    if "first_boto3_import" in r:
        lines.append(row("python -c 'import boto3', bootstrap", r["first_boto3_import"]))
        i = r["in_process"]
        lines.append(f"in process, boto3 loaded: import bedrock_hooks {i['import_ms']:.1f} ms, "
                     f"install() {i['install_ms']:.1f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--make-venv", type=Path, metavar="DIR", help="create a fresh venv with this checkout and "
                                                                     "measure it")
    where.add_argument("--python", help="measure this interpreter's installation (default: the running one)")
    parser.add_argument("--no-deps", action="store_true", help="with --make-venv: install without botocore/boto3/"
                                                                 "wrapt (skips the boto3 measurements)")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--smoke", action="store_true", help="3 runs of everything (for the test suite)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    python = make_venv(args.make_venv, not args.no_deps) if args.make_venv else (args.python or sys.executable)
    results = measure(Interpreter(python), 3 if args.smoke else max(1, args.runs))
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
