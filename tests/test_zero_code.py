"""Zero-code enablement, proven with real interpreters.

Every test starts fresh Python subprocesses that run an *unmodified* application script (it only
does ``boto3.client("bedrock-runtime", endpoint_url=...)``) against the loopback BedrockServer of
this test process, with and without the launcher, and reads what happened from the script's
output and the server's request log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from bedrock_hooks import autoload
from bedrock_hooks.launcher import bootstrap_dir, launch_environment
from bedrock_hooks.testing import BedrockServer, Reply
from _launcher import console_script

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = str(bootstrap_dir())

# The application under test: nothing in it knows about bedrock-hooks.
APP = textwrap.dedent(
    """
    import json, os, sys
    at_start = sorted(m for m in ("botocore", "boto3", "wrapt", "bedrock_hooks") if m in sys.modules)
    bootstrap = sys.modules.get("_bedrock_hooks_bootstrap")
    import boto3

    client = boto3.client("bedrock-runtime", endpoint_url=os.environ["APP_ENDPOINT"])
    result = {"modules_at_start": at_start, "bootstrap_at_start": bootstrap is not None}
    try:
        reply = client.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}])
        result["ok"] = True
        result["text"] = reply["output"]["message"]["content"][0]["text"]
    except Exception as exc:
        result["ok"] = False
        result["error"] = str(exc)
    if os.environ.get("APP_SPAWN_CHILD"):
        child = [sys.executable, "-c",
                 "import json, os, sys; print(json.dumps({'bootstrap': '_bedrock_hooks_bootstrap' in sys.modules,"
                 " 'pythonpath': os.environ.get('PYTHONPATH', '')}))"]
        result["child"] = json.loads(__import__("subprocess").check_output(child))
    print("RESULT " + json.dumps(result))
    """
)


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment: fake credentials, no IMDS, no real config, fast retries."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BEDROCK_HOOKS_", "AWS_", "PYTHON", "BOTO"))}
    env.update(
        PYTHONPATH=str(REPO),
        AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
        AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        # Plain botocore gives up after one attempt; with the hooks BEDROCK_HOOKS_MAX_ATTEMPTS wins.
        AWS_MAX_ATTEMPTS="1",
        AWS_RETRY_MODE="standard",
        BEDROCK_HOOKS_MAX_ATTEMPTS="3",
        BEDROCK_HOOKS_BACKOFF_BASE="0.001",
        BEDROCK_HOOKS_THROTTLE_BACKOFF_BASE="0.001",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


@pytest.fixture
def app(tmp_path: Path) -> Path:
    script = tmp_path / "app.py"
    script.write_text(APP)
    return script


def launcher(*args: str) -> list[str]:
    return [sys.executable, "-m", "bedrock_hooks", "run", *args, "--"]


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def result_of(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result; stdout={proc.stdout!r} stderr={proc.stderr!r}"
    return json.loads(lines[-1][len("RESULT "):])


def run_app(app: Path, server: BedrockServer, *, launch: bool = True, launcher_args: tuple[str, ...] = (),
            **env: str) -> tuple[dict, subprocess.CompletedProcess[str]]:
    cmd = [*launcher(*launcher_args), sys.executable, str(app)] if launch else [sys.executable, str(app)]
    proc = run(cmd, base_env(APP_ENDPOINT=server.url, **env), app.parent)
    return result_of(proc), proc


# -- active through the launcher, inactive otherwise --------------------------------------------

def test_launcher_retries_503_that_plain_botocore_does_not(app: Path, server: BedrockServer) -> None:
    server.script(Reply.service_unavailable(), Reply.ok())
    result, proc = run_app(app, server)
    assert result["ok"], result
    assert len(server.requests) == 2
    assert proc.stderr == ""


def test_without_launcher_the_same_script_is_plain_botocore(app: Path, server: BedrockServer) -> None:
    server.script(Reply.service_unavailable(), Reply.ok())
    result, _ = run_app(app, server, launch=False)
    assert not result["ok"]
    assert "[bedrock-hooks]" not in result["error"]
    assert len(server.requests) == 1


def test_launcher_adds_hint_to_final_throttling_error(app: Path, server: BedrockServer) -> None:
    server.default = Reply.throttling()
    result, proc = run_app(app, server)
    assert not result["ok"]
    assert "ThrottlingException" in result["error"]
    assert "[bedrock-hooks] ThrottlingException" in result["error"]
    assert len(server.requests) == 3  # BEDROCK_HOOKS_MAX_ATTEMPTS, not AWS_MAX_ATTEMPTS=1


def test_enabled_0_means_nothing_is_patched(app: Path, server: BedrockServer) -> None:
    server.default = Reply.throttling()
    result, proc = run_app(app, server, BEDROCK_HOOKS_ENABLED="0")
    assert not result["ok"]
    assert "[bedrock-hooks]" not in result["error"]
    assert len(server.requests) == 1
    assert proc.stderr == ""


def test_other_variables_are_honoured(app: Path, server: BedrockServer) -> None:
    server.default = Reply.throttling()
    result, _ = run_app(app, server, BEDROCK_HOOKS_HINTS="off", BEDROCK_HOOKS_MAX_ATTEMPTS="2")
    assert "[bedrock-hooks]" not in result["error"]
    assert len(server.requests) == 2


def test_broken_configuration_is_one_warning_and_defaults(app: Path, server: BedrockServer) -> None:
    server.script(Reply.service_unavailable(), Reply.ok())
    result, proc = run_app(app, server, BEDROCK_HOOKS_BACKOFF_CAP="banana")
    assert result["ok"]
    warnings = [line for line in proc.stderr.splitlines() if "BEDROCK_HOOKS_BACKOFF_CAP" in line]
    assert len(warnings) == 1, proc.stderr


def test_console_script_runs_the_app(app: Path, server: BedrockServer) -> None:
    """Regression: this test skipped whenever the script was not on PATH (e.g. a venv not activated)."""
    exe = console_script("bedrock-hooks-run")
    server.script(Reply.service_unavailable(), Reply.ok())
    proc = run([exe, "--", sys.executable, str(app)], base_env(APP_ENDPOINT=server.url), app.parent)
    assert result_of(proc)["ok"]
    assert len(server.requests) == 2


# -- startup: nothing heavy is imported before the application asks ------------------------------

def test_bootstrap_does_not_import_botocore_at_startup(app: Path, server: BedrockServer) -> None:
    result, _ = run_app(app, server)
    assert result["bootstrap_at_start"] is True  # the bootstrap did run...
    assert result["modules_at_start"] == []  # ...and imported neither botocore, boto3, wrapt nor us


def test_script_that_never_imports_botocore_sees_nothing(tmp_path: Path) -> None:
    code = ("import sys, json; print(json.dumps({'status': sys.modules['_bedrock_hooks_bootstrap'].status,"
            " 'loaded': [m for m in ('botocore', 'wrapt', 'bedrock_hooks') if m in sys.modules]}))")
    proc = run([*launcher(), sys.executable, "-c", code], base_env(), tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    assert json.loads(proc.stdout) == {"status": "waiting-for-botocore", "loaded": []}


# -- the application's own sitecustomize, child processes ----------------------------------------

def test_users_own_sitecustomize_still_runs(app: Path, server: BedrockServer, tmp_path: Path) -> None:
    user_site = tmp_path / "usersite"
    user_site.mkdir()
    (user_site / "sitecustomize.py").write_text("import os\nos.environ['USER_SITECUSTOMIZE'] = 'ran'\n"
                                                "print('user sitecustomize ran')\n")
    server.script(Reply.service_unavailable(), Reply.ok())
    env = base_env(APP_ENDPOINT=server.url, PYTHONPATH=f"{user_site}{os.pathsep}{REPO}")
    proc = run([*launcher(), sys.executable, "-c",
                "import sys, os; m = sys.modules['sitecustomize']; print(m.__file__, os.environ['USER_SITECUSTOMIZE'])"],
               env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    # (the launcher process itself also runs it once: it is an ordinary Python process)
    assert proc.stdout.splitlines()[-2:] == ["user sitecustomize ran", f"{user_site / 'sitecustomize.py'} ran"]
    # and the hooks are active in the same process
    proc = run([*launcher(), sys.executable, str(app)], env, tmp_path)
    assert result_of(proc)["ok"] and len(server.requests) == 2
    assert proc.stdout.splitlines().count("user sitecustomize ran") == 2


def test_failing_user_sitecustomize_is_reported_like_site_does(tmp_path: Path) -> None:
    user_site = tmp_path / "usersite"
    user_site.mkdir()
    (user_site / "sitecustomize.py").write_text("raise RuntimeError('boom')\n")
    proc = run([*launcher(), sys.executable, "-c", "print('app ran')"],
               base_env(PYTHONPATH=f"{user_site}{os.pathsep}{REPO}"), tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == "app ran\n"
    assert "Error in sitecustomize" in proc.stderr and "RuntimeError: boom" in proc.stderr


def test_child_processes_start_plain(app: Path, server: BedrockServer) -> None:
    result, _ = run_app(app, server, APP_SPAWN_CHILD="1")
    assert result["bootstrap_at_start"] is True
    assert result["child"]["bootstrap"] is False
    assert BOOTSTRAP not in result["child"]["pythonpath"].split(os.pathsep)
    assert str(REPO) in result["child"]["pythonpath"].split(os.pathsep)  # the rest is left alone


def test_propagate_keeps_one_bootstrap_for_children(app: Path, server: BedrockServer) -> None:
    # nested launchers plus --propagate: still exactly one bootstrap entry, one activation
    cmd = [*launcher("--propagate"), *launcher("--propagate"), sys.executable, str(app)]
    proc = run(cmd, base_env(APP_ENDPOINT=server.url, APP_SPAWN_CHILD="1"), app.parent)
    result = result_of(proc)
    assert result["child"]["bootstrap"] is True
    assert result["child"]["pythonpath"].split(os.pathsep).count(BOOTSTRAP) == 1


def test_launch_environment_never_duplicates_the_bootstrap() -> None:
    env = launch_environment({"PYTHONPATH": os.pathsep.join([BOOTSTRAP, "/x", BOOTSTRAP])})
    assert env["PYTHONPATH"].split(os.pathsep) == [BOOTSTRAP, "/x"]
    assert "BEDROCK_HOOKS_PROPAGATE" not in env
    assert launch_environment({}, propagate=True)["BEDROCK_HOOKS_PROPAGATE"] == "1"


# -- never breaks the interpreter ----------------------------------------------------------------

def test_missing_botocore_and_wrapt_are_harmless(tmp_path: Path) -> None:
    """A real interpreter without botocore/boto3/wrapt installed (a bare venv), run by the launcher."""
    env_dir = tmp_path / "bare"
    venv.EnvBuilder(with_pip=False, system_site_packages=False, symlinks=os.name != "nt").create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    code = textwrap.dedent("""
        import sys
        try:
            import botocore.session
        except ImportError as exc:
            print("app handled:", type(exc).__name__)
        print("status", sys.modules["_bedrock_hooks_bootstrap"].status)
    """)
    proc = run([*launcher(), str(python), "-c", code], base_env(), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["app handled: ModuleNotFoundError", "status inactive"]
    assert proc.stderr == ""  # nothing to harden, so nothing to warn about


def test_exception_in_the_hook_is_one_warning_and_plain_botocore(app: Path, server: BedrockServer,
                                                                  tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "bedrock_hooks").mkdir(parents=True)
    (broken / "bedrock_hooks" / "__init__.py").write_text("raise RuntimeError('simulated bug in bedrock_hooks')\n")
    server.script(Reply.service_unavailable(), Reply.ok())
    # The application's path has the broken copy first; the launcher itself imports the real one.
    env = base_env(APP_ENDPOINT=server.url, PYTHONPATH=f"{broken}{os.pathsep}{REPO}")
    start = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from bedrock_hooks.cli import main; "
             f"sys.exit(main(['run', '--', {sys.executable!r}, {str(app)!r}]))")
    proc = run([sys.executable, "-c", start], env, tmp_path)
    result = result_of(proc)
    assert result["ok"] is False and len(server.requests) == 1  # plain botocore: AWS_MAX_ATTEMPTS=1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "simulated bug" in lines[0], proc.stderr


# -- opt-in always-on mode -----------------------------------------------------------------------

def test_pth_always_on_mode(app: Path, server: BedrockServer, tmp_path: Path) -> None:
    """The .pth is inert without BEDROCK_HOOKS_AUTOLOAD=1 and installs the hooks with it."""
    site_dir = tmp_path / "site"
    path = autoload.enable(site_dir)
    assert path.name == autoload.PTH_NAME
    # site.addsitedir processes .pth files exactly as site-packages does at startup
    wrapper = tmp_path / "wrapped_app.py"
    wrapper.write_text(f"import site; site.addsitedir({str(site_dir)!r})\n"
                       f"exec(compile(open({str(app)!r}).read(), {str(app)!r}, 'exec'))\n")
    server.default = Reply.throttling()
    off = result_of(run([sys.executable, str(wrapper)], base_env(APP_ENDPOINT=server.url), tmp_path))
    assert "[bedrock-hooks]" not in off["error"] and len(server.requests) == 1
    server.reset()
    server.default = Reply.throttling()
    on = result_of(run([sys.executable, str(wrapper)],
                       base_env(APP_ENDPOINT=server.url, BEDROCK_HOOKS_AUTOLOAD="1"), tmp_path))
    assert "[bedrock-hooks]" in on["error"] and len(server.requests) == 3
    assert autoload.disable(site_dir) == [path] and not path.exists()


def test_pth_and_launcher_together_install_once(tmp_path: Path) -> None:
    site_dir = tmp_path / "site"
    autoload.enable(site_dir)
    code = (f"import site, sys; site.addsitedir({str(site_dir)!r}); import boto3; "
            "b = sys.modules['_bedrock_hooks_bootstrap']; print(b.origin, b.status)")
    proc = run([*launcher(), sys.executable, "-c", code], base_env(BEDROCK_HOOKS_AUTOLOAD="1"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    # the launcher's bootstrap ran first and owns the installation; the .pth copy stayed passive
    assert proc.stdout.split() == ["launcher", "installed"]


# -- the startup benchmark keeps working -----------------------------------------------------------

def test_startup_bench_smoke() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "startup.py"), "--smoke", "--json"],
                          env=base_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert results["startup_pass"]["runs"] == 3
    for key in ("plain_ms", "bootstrap_ms", "ratio", "delta_ms"):
        assert results["startup_pass"][key] > 0 or key == "delta_ms"
    assert results["in_process"]["import_ms"] > 0 and results["in_process"]["install_ms"] > 0
    for way in ("console_script", "run_script", "python_m"):  # the launcher, started the three ways users do
        launched = results["launcher"][way]
        assert launched["runs"] == 3 and launched["a_wall_ms"] > 0 and launched["a_cpu_ms"] > 0
