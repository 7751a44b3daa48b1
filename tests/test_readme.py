"""README.md must stay true: its tables are the ones generated from the data, its commands exist."""

from __future__ import annotations

import pathlib
import re

from bedrock_hooks.reference import catalog_table, env_table

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_env_table_is_current():
    assert env_table() in README


def test_catalog_table_is_current():
    assert catalog_table() in README


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.findall(r'^TEST_COMMAND="(.*)"$', ci, re.M) == ["python -m pytest -q"]
    assert ci.count("$TEST_COMMAND") == 1  # the one command every environment of the matrix runs
    assert "```bash\npython -m pytest -q\n```" in README


def test_linked_files_exist():
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link


def test_quick_start_shows_the_install_command():
    """Regression: the README never showed `pip install bedrock-hooks`."""
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "```bash\npip install bedrock-hooks\n```" in quick_start


def test_zero_code_section_quotes_startup_as_users_run_it():
    """Startup figures are for the launcher as users start it, measured by bench/startup.py in a fresh venv."""
    zero_code = README.split("## Zero-code", 1)[1].split("\n## ", 1)[0]
    assert "bedrock-hooks run -- python -c pass" in zero_code
    assert "bench/startup.py --make-venv" in zero_code
