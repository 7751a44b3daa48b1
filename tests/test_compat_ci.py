"""The CI matrix proves what it claims: floors are pyproject's, required groups cannot pass by skipping,
and no test turns itself off because a symbol went missing."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

import _requires
import conftest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


floors = _load(ROOT / ".ci" / "floors.py", "ci_floors")


def ci_envs() -> dict[str, tuple[list[str], set[str]]]:
    """.ci/envs as .ci/run reads it: name -> (pip requirements, required groups)."""
    envs = {}
    for line in (ROOT / ".ci" / "envs").read_text().splitlines():
        columns = [c.strip() for c in line.split("#", 1)[0].split("|")]
        if len(columns) >= 2 and columns[0]:
            assert columns[0] not in envs, f"environment {columns[0]} listed twice"
            groups = {g for g in (columns[2] if len(columns) > 2 else "").split(",") if g}
            envs[columns[0]] = (columns[1].split(), groups)
    return envs


def test_oldest_environment_installs_the_floors_pyproject_claims():
    requirements = floors.floors(floors.requirements(PYPROJECT))
    assert {r.split("==")[0] for r in requirements} >= {"botocore", "boto3", "wrapt"}
    assert all("==" in r for r in requirements), requirements
    # the first botocore whose bedrock-runtime has every operation the library handles (Converse and
    # ConverseStream since 1.34.116, ApplyGuardrail since 1.34.143)
    assert "botocore==1.34.143" in requirements
    assert any(word == "floors" or word.startswith("floors[") for word in ci_envs()["oldest"][0])


def test_every_extra_floor_is_tested_somewhere():
    """An extra's ``>=`` floor is a claim too: the oldest env installs it pinned (``floors[...]``), or its own
    environment installs exactly that version (aiobotocore's floor is what the newest aioboto3 pins)."""
    words = ci_envs()["oldest"][0]
    named = next((w for w in words if w.startswith("floors[")), "floors[]")[len("floors["):-1].split(",")
    pinned = set(floors.floors(floors.requirements(PYPROJECT, [n for n in named if n])))
    tested_elsewhere = {"aio"}  # aiobotocore 2.25.1: the aioboto3 env (tests/test_aio_*.py print it)
    for extra in ("redis", "otel", "aio"):
        for requirement in floors.floors(floors.requirements(PYPROJECT, [extra]))[3:]:
            assert requirement in pinned or extra in tested_elsewhere, f"{extra}: {requirement} is claimed, never tested"


def test_floors_without_tomllib_read_the_same_requirements(monkeypatch):
    with_tomllib = floors.requirements(PYPROJECT, ["redis", "otel"])
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10: `import tomllib` fails
    assert floors.requirements(PYPROJECT, ["redis", "otel"]) == with_tomllib and len(with_tomllib) > 3


def test_the_matrix_covers_newest_oldest_urllib3_1_26_and_every_optional_group():
    envs = ci_envs()
    assert {"newest", "oldest", "urllib3-1.26", "aio", "aioboto3", "frameworks"} <= set(envs)
    assert "urllib3<2" in envs["oldest"][0] and "urllib3<2" in envs["urllib3-1.26"][0]
    assert "aiobotocore" in envs["aio"][0] and "aioboto3" in envs["aioboto3"][0]
    assert "opentelemetry-instrumentation-botocore" in envs["frameworks"][0]
    # Every group a test requires is required by some environment: none can only ever skip.
    used = set(re.findall(r'group="([\w-]+)"', "".join(p.read_text() for p in (ROOT / "tests").glob("*.py"))))
    required = {group for _, groups in envs.values() for group in groups} | {"console-script", "natgw"}
    assert used <= required, f"groups no CI environment installs: {used - required}"


def test_doctor_names_the_same_floors_as_pyproject():
    from bedrock_hooks import doctor

    def version(text: str) -> tuple[int, ...]:
        parts = tuple(int(p) for p in text.split("."))
        return parts + (0,) * (3 - len(parts))

    claimed = dict(r.split("==") for r in floors.floors(floors.requirements(PYPROJECT)))
    assert doctor.MIN_VERSIONS == {name: version(floor) for name, floor in claimed.items()}


# -- BEDROCK_HOOKS_TEST_REQUIRE ----------------------------------------------------------------------------

def test_conftest_keeps_the_harness_variables_and_strips_the_library_settings():
    """Regression: conftest stripped every BEDROCK_HOOKS_* variable, BEDROCK_HOOKS_TEST_REQUIRE included,
    so a CI environment that required a group silently skipped its tests."""
    environ = {"BEDROCK_HOOKS_TEST_REQUIRE": "aio", "BEDROCK_HOOKS_RETRY": "off", "BEDROCK_HOOKS_ENABLED": "0",
               "PATH": "/bin"}
    assert sorted(conftest.library_variables(environ)) == ["BEDROCK_HOOKS_ENABLED", "BEDROCK_HOOKS_RETRY"]


def test_a_required_group_fails_where_it_would_skip(monkeypatch):
    monkeypatch.setenv(_requires.REQUIRE_VARIABLE, "natgw,aio")
    with pytest.raises(pytest.fail.Exception, match="unavailable: no netns"):
        _requires.require_that("no netns", group="natgw")
    with pytest.raises(pytest.fail.Exception, match="bedrock_hooks_no_such_module"):
        _requires.require("bedrock_hooks_no_such_module", group="aio")
    with pytest.raises(pytest.skip.Exception):
        _requires.require_that("no otel", group="otel")
    _requires.require_that(None, group="natgw")  # available: nothing happens
    assert _requires.require("json", group="aio").dumps({}) == "{}"


# -- no silent skips ---------------------------------------------------------------------------------------

#: Skips that depend on the platform, not on a symbol of this package (CI runs on Linux with IPv6 loopback);
#: "*": in any test file.
PLATFORM_SKIPS = {
    ("*", 'not hasattr(socket, "TCP_KEEPIDLE")'),
    ("test_testing_server.py", '"no IPv6"'),
    ("test_testing_server.py", '"IPv6 loopback unavailable"'),
}


def test_no_test_skips_itself_when_a_symbol_goes_missing():
    """Regression: tests/test_handler_safety.py skipped when a keep-alive symbol was missing, so a rename
    turned five tests off silently. Optional dependencies go through tests/_requires.py (which fails where
    CI requires them); the only other skips allowed are the platform ones above."""
    found = set()
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name == "_requires.py":
            continue
        for match in re.finditer(r"pytest\.(?:skip|importorskip|mark\.skipif)\((.*)", path.read_text()):
            found.add((path.name, match.group(1)))
    unexpected = {(name, what) for name, what in found
                  if not any(allowed in (name, "*") and text in what for allowed, text in PLATFORM_SKIPS)}
    assert not unexpected, f"skips that can hide a regression (use _requires.require/require_that): {unexpected}"
