"""Print the oldest versions pyproject.toml claims: every ``name>=X`` as ``name==X``.

``floors.py pyproject.toml`` prints the [project] dependencies; ``floors.py pyproject.toml redis otel``
adds the floors of those optional extras. .ci/run installs these in the ``oldest`` environment (the
``floors`` / ``floors[redis,otel]`` words of .ci/envs), so a floor in pyproject.toml is always a tested one.
A requirement without a ``>=`` floor is printed as it is written.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_FLOOR = re.compile(r"^\s*([A-Za-z0-9._-]+)\s*(\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def _arrays(text: str, table: str) -> dict[str, list[str]]:
    """Python 3.10 (no tomllib): the ``name = [...]`` string arrays of one table, enough for these files."""
    section = re.search(rf"^\[{re.escape(table)}\]\s*$(.*?)(?=^\[|\Z)", text, re.S | re.M)
    body = section.group(1) if section else ""
    return {name: re.findall(r"[\"']([^\"']+)[\"']", items)
            for name, items in re.findall(r"^([A-Za-z0-9_-]+)\s*=\s*\[(.*?)\]", body, re.S | re.M)}


def requirements(pyproject: Path, extras: list[str] = ()) -> list[str]:
    """[project] dependencies, then those of each extra named (tomllib on 3.11+)."""
    text = pyproject.read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:
        project, optional = _arrays(text, "project"), _arrays(text, "project.optional-dependencies")
    else:
        data = tomllib.loads(text).get("project", {})
        project, optional = {"dependencies": data.get("dependencies", [])}, data.get("optional-dependencies", {})
    found = list(project.get("dependencies", []))
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"floors.py: pyproject.toml has no extra {extra!r}")
        found += optional[extra]
    return found


def floors(requirements: list[str]) -> list[str]:
    pinned = []
    for requirement in requirements:
        match = _FLOOR.match(requirement)
        pinned.append(f"{match.group(1)}{match.group(2) or ''}=={match.group(3)}" if match else requirement)
    return pinned


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "pyproject.toml")
    print(" ".join(floors(requirements(path, sys.argv[2:]))))
