"""The ``bedrock-hooks`` CLI: explain, catalog, doctor, the .pth commands and launcher errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bedrock_hooks import ENTRIES, autoload
from bedrock_hooks.cli import main
from bedrock_hooks.doctor import measure_clock_offset, probe_socket_keepalive
from bedrock_hooks.explain import explain_lookup
from bedrock_hooks.testing import BedrockServer

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BEDROCK_HOOKS_", "AWS_", "PYTHON"))}
    base.update(PYTHONPATH=str(REPO), AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
                AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "bedrock_hooks", *args], env=base, capture_output=True,
                          text=True, timeout=timeout)


# -- explain -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "status", "entry"), [
    ("ThrottlingException", None, "ThrottlingException"),
    ("throttlingException:http://internal.amazon.com/coral/com.amazon.bedrock/", None, "ThrottlingException"),
    ("Too many tokens per day, please wait before trying again.", None, "DailyTokenQuotaExceeded"),
    ("", 503, "ServiceUnavailable"),
    ("503", None, "ServiceUnavailable"),
    ("An error occurred (ValidationException) when calling the Converse operation: "
     "The provided model identifier is invalid.", None, "ResourceNotFound"),
    ("An error occurred (ThrottlingException) when calling the Converse operation (reached max retries: 4): "
     "Too many tokens per day, please wait before trying again.", None, "DailyTokenQuotaExceeded"),
    ("FTUFormNotFilled", None, "FTUFormNotFilled"),
    ("ReadTimeoutError", None, "ReadTimeout"),
    ("ExpiredTokenException", None, "ExpiredToken"),
])
def test_explain_lookup(query: str, status: int | None, entry: str) -> None:
    found = explain_lookup(query, status=status)
    assert found is not None and found.entry.name == entry


def test_every_entry_is_explainable_by_its_name() -> None:
    for entry in ENTRIES:
        found = explain_lookup(entry.name)
        assert found is not None, entry.name


def test_explain_unknown_error() -> None:
    assert explain_lookup("SomethingNobodySends") is None
    proc = cli("explain", "SomethingNobodySends")
    assert proc.returncode == 1 and "Not in the catalog" in proc.stdout


def test_explain_prints_cause_solution_decision() -> None:
    proc = cli("explain", "Too many tokens per day, please wait before trying again.")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("DailyTokenQuotaExceeded (HTTP 429; decision: fail)")
    assert "Cause:" in out and "Solution:" in out and "never retried" in out


def test_explain_status_option_and_usage_error() -> None:
    proc = cli("explain", "--status", "429")
    assert proc.returncode == 0 and proc.stdout.startswith("ThrottlingException")
    assert cli("explain").returncode == 2


# -- catalog -------------------------------------------------------------------------------------

def test_catalog_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog"]) == 0
    text = capsys.readouterr().out
    assert all(e.name in text for e in ENTRIES)
    assert main(["catalog", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [e.name for e in ENTRIES]
    assert main(["catalog", "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out.splitlines()
    assert markdown[0].startswith("| Entry |") and len(markdown) == len(ENTRIES) + 2


# -- doctor --------------------------------------------------------------------------------------

def _checks(proc: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], dict]:
    return {(c["section"], c["name"]): c for c in json.loads(proc.stdout)}


def test_doctor_report_sections() -> None:
    proc = cli("doctor", env={"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "SECRETSECRET"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for heading in ("Versions", "Keep-alive", "Configuration", "Zero-code", "Credentials", "Clock"):
        assert f"\n{heading}\n" in proc.stdout
    assert "botocore:" in proc.stdout and "per-socket TCP_KEEPIDLE" in proc.stdout
    assert "source: env" in proc.stdout
    assert "SECRETSECRET" not in proc.stdout and "AKIDEXAMPLE" not in proc.stdout


def test_doctor_configuration_sources_and_rejections() -> None:
    proc = cli("doctor", "--json", env={"BEDROCK_HOOKS_MAX_ATTEMPTS": "banana", "BEDROCK_HOOKS_RETRY": "off",
                                         "BEDROCK_HOOKS_RETRYY": "1"})
    checks = _checks(proc)
    assert checks[("configuration", "BEDROCK_HOOKS_RETRY")]["detail"] == "off (set by BEDROCK_HOOKS_RETRY)"
    rejected = checks[("configuration", "BEDROCK_HOOKS_MAX_ATTEMPTS")]
    assert rejected["status"] == "warn" and "'banana'" in rejected["detail"] and "using 5" in rejected["detail"]
    assert checks[("configuration", "BEDROCK_HOOKS_RETRYY")]["status"] == "warn"
    assert proc.stderr == ""  # reported once, in the report, not also as a log warning


def test_doctor_versions_and_keepalive_checks() -> None:
    checks = _checks(cli("doctor", "--json"))
    assert checks[("versions", "botocore")]["status"] == "ok"
    assert checks[("versions", "boto3")]["status"] == "ok"
    if Path("/proc/sys/net/ipv4/tcp_keepalive_time").exists():
        assert "tcp_keepalive_time=" in checks[("keep-alive", "kernel defaults")]["detail"]
    ok, detail = probe_socket_keepalive(45, 15, 4)
    assert checks[("keep-alive", "per-socket TCP_KEEPIDLE")]["status"] == ("ok" if ok else "warn")
    if ok:
        assert "TCP_KEEPIDLE=45" in detail or "TCP_KEEPALIVE=45" in detail


def test_doctor_credential_lookup_is_bounded(tmp_path: Path) -> None:
    """A credential_process that hangs must not hang doctor."""
    config = tmp_path / "config"
    config.write_text(f"[default]\ncredential_process = {sys.executable} -c \"import time; time.sleep(30)\"\n")
    started = time.monotonic()
    proc = cli("doctor", "--json", "--timeout", "1", env={"AWS_CONFIG_FILE": str(config)})
    elapsed = time.monotonic() - started
    source = _checks(proc)[("credentials", "source")]
    assert source["status"] == "warn" and "did not finish within 1s" in source["detail"]
    assert elapsed < 20


def test_doctor_measures_clock_offset_from_date_header() -> None:
    with BedrockServer() as server:
        server.clock_skew = 600.0
        status, detail, offset = measure_clock_offset(server.url, timeout=5)
        assert offset is not None and abs(offset - 600) < 3
        assert status == "fail" and "behind" in detail
        server.clock_skew = 0.0
        status, _, offset = measure_clock_offset(server.url, timeout=5)
        assert status == "ok" and abs(offset) < 3
        proc = cli("doctor", "--endpoint", server.url)
        assert "\nClock\n  [ok]" in proc.stdout


def test_doctor_unreachable_endpoint_is_a_warning() -> None:
    status, detail, offset = measure_clock_offset("http://127.0.0.1:9/", timeout=2)
    assert status == "warn" and offset is None


# -- always-on .pth, bootstrap-path, launcher errors ---------------------------------------------

def test_enable_and_disable_pth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["enable-pth", "--dir", str(tmp_path)]) == 0
    path = tmp_path / autoload.PTH_NAME
    lines = path.read_text().splitlines()
    code = [line for line in lines if not line.startswith("#")]
    assert code == [autoload.PTH_LINE] and code[0].startswith("import ")  # site.py executes it
    assert main(["disable-pth", "--dir", str(tmp_path)]) == 0
    assert not path.exists()
    assert "removed" in capsys.readouterr().out


def test_pth_line_costs_nothing_when_off() -> None:
    """Executed as site.py would, with the variable unset: nothing imported, nothing registered."""
    before = set(sys.modules)
    env_before = os.environ.pop(autoload.ENV_VAR, None)
    try:
        exec(autoload.PTH_LINE, {})
    finally:
        if env_before is not None:
            os.environ[autoload.ENV_VAR] = env_before
    assert set(sys.modules) - before == set()


def test_bootstrap_path_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bootstrap-path"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert (path / "sitecustomize.py").is_file()
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("bedrock-hooks ")


def test_run_errors() -> None:
    assert cli("run").returncode == 2
    proc = cli("run", "--", "definitely-not-a-command-xyz")
    assert proc.returncode == 127 and "command not found" in proc.stderr


def test_run_passes_exit_status_and_arguments(tmp_path: Path) -> None:
    proc = cli("run", "--", sys.executable, "-c", "import sys; print(sys.argv[1:]); sys.exit(3)", "-v", "--x")
    assert proc.returncode == 3 and proc.stdout.strip() == "['-v', '--x']"


# -- help texts and the bootstrap's statuses ------------------------------------------------------

def _literals(node) -> set[str]:
    """The strings an expression can yield: a literal, or either side of `"a" if x else "b"`."""
    import ast

    if isinstance(node, ast.IfExp):
        return _literals(node.body) | _literals(node.orelse)
    return {node.value} if isinstance(node, ast.Constant) and isinstance(node.value, str) else set()


def _bootstrap_statuses() -> set[str]:
    """Every value the bootstrap assigns to its ``status`` (read from its source, as it never imports)."""
    import ast

    tree = ast.parse((REPO / "bedrock_hooks" / "bootstrap" / "sitecustomize.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                for name, value in zip(names, values):
                    if isinstance(name, ast.Name) and name.id == "status":
                        found.update(_literals(value))
    return found


def test_every_bootstrap_status_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: the `passive` status was documented nowhere (docs/zero-code.md, CLI help)."""
    statuses = _bootstrap_statuses()
    assert "passive" in statuses and statuses == set(autoload.BOOTSTRAP_STATUSES)
    docs = (REPO / "docs" / "zero-code.md").read_text()
    with pytest.raises(SystemExit):
        main(["--help"])
    top_help = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["enable-pth", "--help"])
    pth_help = capsys.readouterr().out
    for status in statuses:
        assert f"`{status}`" in docs, status
        assert status in top_help and status in pth_help, status


def test_enable_and_disable_pth_have_their_own_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: disable-pth's help text was a copy of enable-pth's."""
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
               if line.strip().startswith(("enable-pth", "disable-pth"))}
    assert "write" in listing["enable-pth"] and "remove" in listing["disable-pth"]
    helps = {}
    for command in ("enable-pth", "disable-pth"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps[command] = capsys.readouterr().out
    assert "Remove" in helps["disable-pth"] and "every site directory" in helps["disable-pth"]
    assert "Write" in helps["enable-pth"] and autoload.ENV_VAR in helps["enable-pth"]
    dir_help = {c: next(line for line in h.splitlines() if "--dir" in line and "DIR " in line) for c, h in helps.items()}
    assert dir_help["enable-pth"] != dir_help["disable-pth"]


def test_run_options_are_parsed_without_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    assert "usage: bedrock-hooks run [-h] [--propagate] [--] COMMAND" in capsys.readouterr().out
    assert main(["run", "--bogus", "python"]) == 2
    assert "unrecognized option '--bogus'" in capsys.readouterr().err
    proc = cli("run", sys.executable, "-c", "import os; print(os.environ.get('BEDROCK_HOOKS_PROPAGATE'))")
    assert proc.returncode == 0 and proc.stdout.strip() == "None"  # the command's own options are its own
    proc = cli("run", "--propagate", sys.executable, "-c", "import os; print(os.environ['BEDROCK_HOOKS_PROPAGATE'])")
    assert proc.returncode == 0 and proc.stdout.strip() == "1"
