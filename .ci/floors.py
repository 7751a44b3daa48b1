"""Print the oldest versions pyproject.toml claims: every ``name>=X`` of [project] dependencies as ``name==X``.

.ci/run installs these in the ``oldest`` environment, so a floor in pyproject.toml is always a tested one.
A dependency without a ``>=`` floor is printed as it is written.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_FLOOR = re.compile(r"^\s*([A-Za-z0-9._-]+)\s*(\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def dependencies(pyproject: Path) -> list[str]:
    """[project] dependencies (tomllib on 3.11+, a small parser for the one array on 3.10)."""
    text = pyproject.read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python 3.10: only the `dependencies = [...]` array is needed
        block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M)
        return re.findall(r"[\"']([^\"']+)[\"']", block.group(1)) if block else []
    return list(tomllib.loads(text).get("project", {}).get("dependencies", []))


def floors(requirements: list[str]) -> list[str]:
    pinned = []
    for requirement in requirements:
        match = _FLOOR.match(requirement)
        pinned.append(f"{match.group(1)}{match.group(2) or ''}=={match.group(3)}" if match else requirement)
    return pinned


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "pyproject.toml")
    print(" ".join(floors(dependencies(path))))
