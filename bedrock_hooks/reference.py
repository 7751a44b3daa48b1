"""Reference tables generated from the data (options and catalog), for the README and the CLI.

The README embeds these tables verbatim and a test compares them, so documentation cannot drift
from what the library actually does.
"""

from __future__ import annotations

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


def _recognised_by(entry: Entry) -> str:
    parts = []
    if entry.message is not None:
        first = entry.message.pattern.split("|")[0].replace("\\", "")
        parts.append(f"message /{first}/…" if "|" in entry.message.pattern else f"message /{first}/")
    if entry.codes:
        parts.append(", ".join(sorted(entry.codes)))
    if entry.statuses:
        parts.append("HTTP " + "/".join(map(str, sorted(entry.statuses))))
    if entry.exceptions:
        parts.append(", ".join(sorted(entry.exceptions)))
    return "; ".join(parts)


def _decision(entry: Entry) -> str:
    if entry.decision is Decision.RETRY:
        return f"retry ({entry.backoff.value})"
    if entry.remedy is not None:
        return f"{entry.decision.value} ({entry.remedy.value})"
    return entry.decision.value


def catalog_table() -> str:
    """Markdown table of every catalog entry: how it is recognised and what the library decides."""
    rows = ["| Entry | HTTP | Recognised by | Decision | Source |", "|---|---|---|---|---|"]
    rows += [f"| `{e.name}` | {e.status or '-'} | {_recognised_by(e)} | **{_decision(e)}** | {e.source} |"
             for e in ENTRIES]
    return "\n".join(rows)
