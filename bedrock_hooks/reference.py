"""Reference tables generated from the data (options and catalog), for the README and the CLI.

The README embeds these tables verbatim and a test compares them, so documentation cannot drift
from what the library actually does. ``bedrock-hooks catalog`` prints the same tables (and the
catalog as JSON), and ``bedrock-hooks explain`` says how an entry is recognised in the words of
:func:`recognised_by`.
"""

from __future__ import annotations

import json
from typing import Any

from .catalog import ENTRIES, Decision, Entry
from .config import LAUNCHER_VARIABLES, OPTIONS


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def env_table() -> str:
    """Markdown table of every ``BEDROCK_HOOKS_*`` variable with its default."""
    rows = ["| Variable | Default | What it does |", "|---|---|---|"]
    rows += [f"| `{o.env}` | `{_show(o.default)}` | {o.doc} |" for o in OPTIONS]
    rows += [f"| `{name}` | `off` | {doc.replace(' (default off)', '')} |" for name, doc in LAUNCHER_VARIABLES.items()]
    return "\n".join(rows)


def recognised_by(entry: Entry) -> str:
    """How the catalog recognises ``entry``: message pattern, codes, statuses, exception classes."""
    parts = []
    if entry.message is not None:
        alternatives = top_level_alternatives(entry.message.pattern)
        first = alternatives[0].replace("\\", "")
        parts.append(f"message /{first}/…" if len(alternatives) > 1 else f"message /{first}/")
    if entry.codes:
        parts.append(", ".join(sorted(entry.codes)))
    if entry.statuses:
        parts.append("HTTP " + "/".join(map(str, sorted(entry.statuses))))
    if entry.exceptions:
        parts.append(", ".join(sorted(entry.exceptions)))
    return "; ".join(parts)


def top_level_alternatives(pattern: str) -> list[str]:
    """``pattern`` split at the ``|`` that are not inside a group, a class or an escape.

    ``a (b|c)|d`` gives ``["a (b|c)", "d"]``: cutting at the first ``|`` would show a broken
    ``a (b`` where the pattern has a group of alternatives.
    """
    parts, start, depth, in_class, escaped = [], 0, 0, False, False
    for i, char in enumerate(pattern):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    return parts + [pattern[start:]]


def _decision(entry: Entry) -> str:
    if entry.decision is Decision.RETRY:
        return f"retry ({entry.backoff.value})"
    if entry.remedy is not None:
        return f"{entry.decision.value} ({entry.remedy.value})"
    return entry.decision.value


def catalog_table() -> str:
    """Markdown table of every catalog entry: how it is recognised and what the library decides."""
    rows = ["| Entry | HTTP | Recognised by | Decision | Source |", "|---|---|---|---|---|"]
    rows += [f"| `{e.name}` | {e.status or '-'} | {_cell(recognised_by(e))} | **{_decision(e)}** | {e.source} |"
             for e in ENTRIES]
    return "\n".join(rows)


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a bare ``|`` would end the cell."""
    return text.replace("|", "\\|")


def catalog_text(width: int = 90) -> str:
    """One line per entry (name, HTTP status, decision, cause cut to ``width``): for a terminal."""
    rows = [("ENTRY", "HTTP", "DECISION", "CAUSE")]
    rows += [(e.name, str(e.status or "-"), e.decision.value, e.cause) for e in ENTRIES]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out = []
    for *cells, cause in rows:
        cause = cause if len(cause) <= width else cause[:width - 3] + "..."
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)) + "  " + cause)
    return "\n".join(out)


def catalog_json() -> str:
    """Every entry with everything that recognises it, as JSON (for programs)."""
    rows = [{"name": e.name, "status": e.status, "decision": e.decision.value, "cause": e.cause,
             "solution": list(e.solution), "codes": sorted(e.codes), "statuses": sorted(e.statuses),
             "message": e.message.pattern if e.message is not None else None,
             "exceptions": sorted(e.exceptions), "source": e.source} for e in ENTRIES]
    return json.dumps(rows, indent=2)


#: ``bedrock-hooks catalog --format FORMAT``.
CATALOG_FORMATS = {"text": catalog_text, "markdown": catalog_table, "json": catalog_json}
